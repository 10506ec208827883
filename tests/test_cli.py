"""The command line parses, dispatches and reports user errors in one line."""

import json

from senet.cli import main


def test_models_lists_and_filters(capsys):
    assert main(["models", "se_resnext*"]) == 0
    out = capsys.readouterr().out
    assert "se_resnext50_32x4d" in out and "resnet50 " not in out


def test_summary_with_baseline(capsys):
    assert main(["summary", "legacy_se_resnet50", "--baseline", "--no-parts"]) == 0
    out = capsys.readouterr().out
    assert "28,088,024" in out and "25,557,032" in out
    assert "3871.527 M" not in out and "3.8715 G" in out and "3.8580 G" in out


def test_summary_json_and_input_size(capsys):
    assert main(["summary", "se_resnet20", "--input-size", "1x28x28", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["se_resnet20"]["input_size"] == [1, 28, 28]
    assert data["se_resnet20"]["se_blocks"] == 9


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["summary", "se_resnet5"]) == 2  # (timm's "seresnet50" is an alias now)
    err = capsys.readouterr().err
    assert "unknown model 'se_resnet5'" in err and "se_resnet50" in err and "Traceback" not in err


def test_summary_set_passes_se_options(capsys):
    # Table 10's r = 8 (30,603,912 in the authors' layout) and Table 13's all-but-last stage.
    assert main(["summary", "legacy_se_resnet50", "--set", "se_reduction=8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["legacy_se_resnet50 se_reduction=8"]["params"] == 30_603_912
    assert main(["summary", "legacy_se_resnet50", "--set", "se_stages=[1,2,3]", "--baseline", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [v["params"] for v in data.values()] == [26_508_632, 25_557_032]
    assert main(["summary", "se_resnet50", "--set", "se_reduction=0"]) == 2
    assert "se.reduction" in capsys.readouterr().err


def test_models_without_match_names_the_families(capsys):
    assert main(["models", "--family", "transformer"]) == 2
    err = capsys.readouterr().err
    assert "family 'transformer'" in err and "resnet" in err and "densenet" in err
