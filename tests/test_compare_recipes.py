"""The 2 x 2 comparison (recipe x SE/plain): each cell trains exactly its recipe, and the table
reports the SE gain per recipe with its standard error."""

import json
import math

import pytest

from senet.experiments.compare import recipe_comparison_sweep, write_recipe_comparison
from senet.experiments.sweep import RunRecord, cell_config, run_sweep
from senet.experiments.report import write_sweep_report
from senet.train import load_config
from senet.train.config import config_to_dict


def test_each_cell_trains_its_recipe_exactly():
    sweep = recipe_comparison_sweep(["bundled", "bundled_modern"], seeds=[0, 1])
    assert [c.label for c in sweep.cells] == ["se_resnet20 without SE (bundled)", "se_resnet20 (bundled)",
                                              "se_resnet20 without SE (bundled_modern)", "se_resnet20 (bundled_modern)"]
    for cell, recipe in zip(sweep.cells, ["bundled", "bundled", "bundled_modern", "bundled_modern"]):
        got = config_to_dict(cell_config(sweep, cell, 1))
        want = config_to_dict(load_config(recipe, ["seed=1"]))
        if "without SE" in cell.label:
            want["model"]["overrides"]["se"] = None
        assert got == want, cell.label
    with pytest.raises(ValueError, match="two or more recipes"):
        recipe_comparison_sweep(["bundled"])


def _record(cell, seed, top1):
    return RunRecord(cell, seed, {"top1_err": top1, "top5_err": top1 / 4}, {"top1_err": top1 - 1, "top5_err": top1 / 5},
                     [{"epoch": 1, "top1_err": top1, "train_loss": 1.0}], 1.0, 100.0, "")


def test_the_table_reports_the_se_gain_per_recipe(tmp_path):
    sweep = recipe_comparison_sweep(["bundled", "bundled_modern"], seeds=[0, 1, 2])
    errors = {"se_resnet20 without SE (bundled)": [30.0, 31.0, 32.0], "se_resnet20 (bundled)": [25.0, 25.5, 26.0],
              "se_resnet20 without SE (bundled_modern)": [24.0, 26.0, 25.0], "se_resnet20 (bundled_modern)": [25.0, 24.0, 26.5]}
    records = run_sweep(sweep, tmp_path, lambda cfg, path: _record("", cfg.seed, errors[_label(sweep, cfg)][cfg.seed]))
    write_sweep_report(sweep, records, tmp_path)
    text = write_recipe_comparison(tmp_path, records, ["bundled", "bundled_modern"], "se_resnet20")
    # bundled: plain 31.00, SE 25.50; gain 5.50 with Welch stderr sqrt(1/3 + 0.25/3) = 0.6455: resolved.
    assert "| bundled | plain | 31.00 ± 0.58 |" in text and "| bundled | SE | 25.50 ± 0.29 |" in text
    assert "bundled, final top-1: SE gain +5.50 points (standard error 0.65); resolved" in text
    assert "bundled, final top-1: SE gain +5.50 points (standard error 0.65); resolved (|gain| > 2 x" in text
    assert ("bundled_modern, final top-1: SE gain -0.17 points (standard error 0.93); "
            "not resolved (|gain| <= 2 x standard error)") in text
    results = json.loads((tmp_path / "results.json").read_text())
    gain = results["recipes"]["table"]["bundled"]["se_gain_final_top1_err"]
    assert math.isclose(gain["delta"], 5.5) and math.isclose(gain["stderr"], math.sqrt(1 / 3 + 0.25 / 3))
    assert "## SE gain under each recipe" in (tmp_path / "report.md").read_text()


def _label(sweep, cfg):
    for cell in sweep.cells:
        if config_to_dict(cell_config(sweep, cell, cfg.seed)) == config_to_dict(cfg):
            return cell.label
    raise AssertionError("no cell")


def test_the_cli_parses_two_recipes():
    from senet.cli import build_parser

    args = build_parser().parse_args(["compare", "--recipe", "bundled", "bundled_modern", "--seeds", "2"])
    assert args.recipe == ["bundled", "bundled_modern"] and args.seeds == 2
