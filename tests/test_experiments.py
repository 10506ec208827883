"""Sweeps and paired comparisons: validation, resumable runs, reports, honest statistics."""

import json
import math

import pytest

from senet.experiments import (comparison_sweep, difference, load_sweep, run_sweep, summarize, sweep_from_dict,
                               train_run, write_sweep_report)
from senet.experiments.sweep import cell_config, read_record, run_dir
from senet.train import fit

TINY = {"data": {"dataset": "synthetic:64", "num_workers": 0}, "epochs": 2, "batch_size": 32, "eval_batch_size": 64,
        "model": {"name": "se_resnet20", "overrides": {"layers": [1, 1, 1]}}}


def tiny_sweep(seeds=(0, 1)):
    return sweep_from_dict({
        "name": "tiny squeeze sweep", "table": "Table 11", "paper_setting": "ImageNet SE-ResNet-50",
        "recipe": "bundled", "config": TINY, "seeds": list(seeds),
        "cells": [
            {"label": "Avg", "config": {"model": {"overrides": {"se_squeeze": "avg"}}}, "paper": {"top1": 22.28}},
            {"label": "Max", "config": {"model": {"overrides": {"se_squeeze": "max"}}}, "paper": {"top1": 22.57}},
        ]})


def test_stats_are_honest():
    s = summarize([1.0, 2.0, 3.0])
    assert s.mean == 2.0 and s.std == 1.0 and str(s) == "2.00 ± 1.00"
    d = difference([10.0, 10.2, 9.8], [12.0, 12.1, 11.9])
    assert d.resolved and d.delta == pytest.approx(-2.0)
    assert "better on this data" in d.statement("top-1", "SE", "base")
    noisy = difference([10.0, 14.0, 6.0], [11.0, 9.0, 13.0])
    assert not noisy.resolved and "do not resolve" in noisy.statement("top-1", "SE", "base")
    single = difference([1.0], [2.0])
    assert math.isnan(single.stderr) and "no claim" in single.statement("top-1", "a", "b")
    with pytest.raises(ValueError, match="empty"):
        summarize([])


def test_cells_merge_over_base_config():
    sweep = tiny_sweep()
    cfg = cell_config(sweep, sweep.cells[1], seed=5)
    assert cfg.seed == 5 and cfg.epochs == 2
    assert cfg.model.overrides == {"layers": [1, 1, 1], "se_squeeze": "max"}  # merged, not replaced


def test_sweep_validation_names_the_problem():
    with pytest.raises(ValueError, match="unknown key"):
        sweep_from_dict({"name": "x", "cells": [{"label": "a"}], "seed": [1]})
    with pytest.raises(ValueError, match="unknown config key 'optim.learning_rate'"):
        sweep_from_dict({"name": "x", "cells": [{"label": "a", "config": {"optim": {"learning_rate": 1}}}]})
    with pytest.raises(ValueError, match="distinct"):
        sweep_from_dict({"name": "x", "cells": [{"label": "a b"}, {"label": "a_b"}]})
    with pytest.raises(FileNotFoundError, match="no sweep file"):
        load_sweep("no_such_sweep")


@pytest.mark.slow
def test_run_resume_and_report(tmp_path):
    sweep = tiny_sweep()
    calls = []

    def counting(cfg, path):
        calls.append((cfg.model.overrides["se_squeeze"], cfg.seed))
        return train_run(cfg, path, device="cpu")

    # A half-finished sweep: only "Avg" ran; and one "Max" run was cut off after its first epoch.
    run_sweep(sweep, tmp_path, counting, cells=["Avg"])
    assert sorted(calls) == [("avg", 0), ("avg", 1)]
    cut = run_dir(tmp_path, sweep.cells[1], 0)
    fit(cell_config(sweep, sweep.cells[1], 0), cut, device="cpu", stop_after=1)
    assert read_record(cut) is None
    calls.clear()
    records = run_sweep(sweep, tmp_path, counting)
    assert sorted(calls) == [("max", 0), ("max", 1)]  # finished cells are not rerun
    assert [len(r.history) for r in records["Max"]] == [2, 2]  # the cut-off run resumed to the end
    assert records["Max"][0].params == records["Avg"][0].params
    assert records["Avg"][0].paper_flops > records["Avg"][0].macs

    report = write_sweep_report(sweep, records, tmp_path, baseline="Avg")
    text = report.read_text()
    assert "| Avg |" in text and "| Max |" in text and "22.57" in text and "Table 11" in text
    assert "Max - Avg" in text
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data["records"]) == {"Avg", "Max"}


def test_comparison_pairs_se_model_with_its_baseline():
    s = comparison_sweep(["se_resnet20"], config=TINY, seeds=[0])
    assert [c.label for c in s.cells] == ["se_resnet20 without SE", "se_resnet20"]
    assert cell_config(s, s.cells[0], 0).model.overrides["se"] is None
    with pytest.raises(ValueError, match="no SE blocks"):
        comparison_sweep(["resnet20"])
    with pytest.raises(KeyError, match="se_resnet20"):
        comparison_sweep(["resnet20", "seresnet20"])
