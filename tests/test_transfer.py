"""Transfer learning with retrofitted SE, end to end on a tiny network (docs/experiments.md)."""

import json

import pytest
import torch

import senet
from senet.cli import main
from senet.data import load_dataset, make_loader
from senet.experiments.sweep import slug
from senet.train import evaluate, fit, load_config, load_model

TINY = ["model.name=resnet20", "model.overrides.layers=[1, 1, 1]", "data.dataset=synthetic:128:3x16x16",
        "data.num_workers=0", "batch_size=32", "eval_batch_size=64"]
SET = [x for kv in TINY[1:] for x in ("--set", kv)]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "plain"
    fit(load_config("bundled", TINY + ["epochs=2"]), run, device="cpu")
    return run


def test_retrofit_in_config_keeps_the_pretrained_function_then_reloads(pretrained, tmp_path):
    plain = load_model(pretrained)
    test = load_dataset("synthetic:128:3x16x16", "test")
    loader = make_loader(test, 64, train=False)
    before = evaluate(plain, loader)
    # fit loads the plain weights, then retrofits SE with identity init (lr 0: weights stay as loaded).
    cfg = load_config("bundled", TINY + ["epochs=1", "optim.lr=0.0", "optim.weight_decay=0.0",
                                         f"model.weights={pretrained}/checkpoints/best.safetensors",
                                         "model.weights_source=senet",
                                         "model.retrofit={conv_activations: true, se: {reduction: 4}, init: identity}"])
    result = fit(cfg, tmp_path / "se", device="cpu")
    se_blocks = [m for m in result.model.modules() if isinstance(m, senet.SqueezeExcite)]
    assert len(se_blocks) > 0
    # lr 0 leaves every weight as loaded; BN statistics move in train mode, so compare on the
    # checkpoint after one epoch against evaluating the same weights: the retrofitted net reloads exactly.
    rebuilt = load_model(tmp_path / "se")
    assert rebuilt.pretrained_cfg.retrofit.init == "identity" and rebuilt.pretrained_cfg == result.card
    assert evaluate(rebuilt, loader) == evaluate(result.model, loader)
    assert before["top1_err"] < 90  # the pretrained plain network had learned something


def test_identity_init_matches_plain_outputs(pretrained):
    plain, se = load_model(pretrained), load_model(pretrained)
    report = senet.retrofit(se, conv_activations=True, se=senet.SEConfig(reduction=4), init="identity",
                            input_size=plain.pretrained_cfg.input_size)
    assert report.inserted
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(se.eval()(x), plain.eval()(x), rtol=0, atol=1e-5)


def test_transfer_command_end_to_end(pretrained, tmp_path, capsys):
    out = tmp_path / "tr"
    args = ["transfer", "--checkpoint", str(pretrained), "--reduction", "4", "--out", str(out), "--device", "cpu",
            "--set", "epochs=1", "--set", "optim.lr=1e-3", *SET]
    assert main(args) == 0
    text = (out / "report.md").read_text()
    for label in ("plain fine-tune", "+SE, identity init", "+SE, default init"):
        assert f"| {label} |" in text
    records = json.loads((out / "results.json").read_text())["records"]
    assert records["+SE, identity init"][0]["params"] > records["plain fine-tune"][0]["params"]
    run = out / slug("+SE, identity init") / "seed0"
    assert main(["eval", "--checkpoint", str(run), "--device", "cpu"]) == 0  # rebuilds the retrofitted net
    assert main(["transfer", "--checkpoint", str(run)]) == 2
    assert "already has retrofitted blocks" in capsys.readouterr().err


def test_bad_retrofit_config_names_the_key():
    from senet.models.retrofit import retrofit_from_config

    model = senet.create_model("resnet20")
    with pytest.raises(ValueError, match="unknown key"):
        retrofit_from_config(model, {"after": "conv"}, (3, 32, 32))
    with pytest.raises(ValueError, match="not torch.nn module classes"):
        retrofit_from_config(model, {"types": ["Conv3x3"]}, (3, 32, 32))
    with pytest.raises(ValueError, match="SE option"):
        retrofit_from_config(model, {"types": "Conv2d", "se": {"ratio": 4}}, (3, 32, 32))
