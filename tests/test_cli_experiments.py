"""End to end through the command line: compare, ablate (resumed), excitations, report (tiny settings)."""

import json

import pytest
import yaml

from senet.cli import main

TINY = ["--set", "data.dataset=synthetic:64", "--set", "data.num_workers=0", "--set", "epochs=2",
        "--set", "batch_size=32", "--set", "model.overrides.layers=[1,1,1]", "--device", "cpu"]


@pytest.mark.slow
def test_compare_then_excitations_then_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["compare", "resnet20", "se_resnet20", "--seeds", "2", "--out", str(out), *TINY]) == 0
    text = (out / "report.md").read_text()
    assert "| resnet20 |" in text and "| se_resnet20 |" in text and "se_resnet20 - resnet20" in text
    assert (out / "curves.png").is_file()
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["seed"] for r in records["se_resnet20"]] == [0, 1]
    assert records["se_resnet20"][0]["params"] > records["resnet20"][0]["params"]

    run = out / "se_resnet20" / "seed0"
    ex = tmp_path / "ex"
    assert main(["excitations", "--checkpoint", str(run), "--out", str(ex), "--classes", "0,1", "--device", "cpu"]) == 0
    stats = json.loads((ex / "excitations.json").read_text())
    assert len(stats["stats"]["blocks"]) == 3
    assert stats["last_stage_study"]["params_saved"] > 0
    for fig in ("class_excitations.png", "blocks.png"):
        assert (ex / fig).stat().st_size > 10_000
    assert "Removing the last stage" in (ex / "report.md").read_text()

    page = tmp_path / "all.md"
    assert main(["report", str(tmp_path), "--out", str(page)]) == 0
    body = page.read_text()
    assert body.count("| se_resnet20 |") >= 2 and "Excitation analysis" in body
    assert (tmp_path / "all_curves.png").is_file()


@pytest.mark.slow
def test_ablate_resumes_half_finished_sweep(tmp_path, capsys):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "tiny gates", "recipe": "bundled", "seeds": [0],
        "config": {"model": {"name": "se_resnet20"}},
        "cells": [{"label": "Sigmoid", "config": {"model": {"overrides": {"se_gate": "sigmoid"}}}},
                  {"label": "Tanh", "config": {"model": {"overrides": {"se_gate": "tanh"}}}}]}))
    out = tmp_path / "abl"
    assert main(["ablate", str(sweep), "--out", str(out), "--only", "Sigmoid", *TINY]) == 0
    capsys.readouterr()
    assert main(["ablate", str(sweep), "--out", str(out), *TINY]) == 0
    log = capsys.readouterr().out
    assert "Sigmoid, seed 0: finished earlier, kept" in log and "Tanh, seed 0: training" in log
    assert "| Tanh |" in (out / "report.md").read_text()
    # Rerunning into the same directory with another config must not mix old results in.
    assert main(["ablate", str(sweep), "--out", str(out), *TINY, "--set", "epochs=3"]) == 2
    assert "differs in epochs" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["ablate", "no_such_table"]) == 2
    assert "no sweep file" in capsys.readouterr().err
    assert main(["compare", "resnet20", "seresnet20"]) == 2
    assert "se_resnet20" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no training runs" in capsys.readouterr().err
