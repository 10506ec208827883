"""Weight compatibility with timm and the authors' (legacy/Cadene) layouts, and load errors."""

import pytest
import torch

import senet
from senet.weights import WeightLoadError
from senet.weights.convert import model_label

from conftest import load_timm_fixture

FIXTURES = {
    "seresnet18": ("se_resnet18", "timm"),
    "seresnet50": ("se_resnet50", "timm"),
    "seresnext50_32x4d": ("se_resnext50_32x4d", "timm"),
    "resnet50": ("resnet50", "timm"),
    "legacy_seresnet18": ("legacy_se_resnet18", "legacy"),
    "legacy_seresnet50": ("legacy_se_resnet50", "legacy"),
    "legacy_seresnext50_32x4d": ("legacy_se_resnext50_32x4d", "legacy"),
    "legacy_senet154": ("legacy_senet154", "legacy"),
}


@pytest.mark.parametrize("fixture", list(FIXTURES))
def test_reproduces_reference_logits_float64(fixture):
    name, source = FIXTURES[fixture]
    meta, sd, x, ref = load_timm_fixture(fixture)
    model = senet.create_model(name).double().eval()
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]
    report = senet.load_weights(model, sd, source=source)
    assert report.ok
    with torch.no_grad():
        out = model(x.double())
    assert (out - ref).abs().max().item() < 1e-6


def test_linear_form_se_loads_conv_weights():
    _, sd, x, ref = load_timm_fixture("seresnet18")
    model = senet.create_model("se_resnet18", se_fc="linear").double().eval()
    senet.load_weights(model, sd, source="timm")
    with torch.no_grad():
        assert (model(x.double()) - ref).abs().max().item() < 1e-6


def test_wrong_layout_fails_in_one_line_and_reports_every_key():
    _, sd, _, _ = load_timm_fixture("legacy_seresnet18")
    model = senet.create_model("se_resnet18")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightLoadError) as err:
        senet.load_weights(model, sd, source="timm")  # legacy keys, wrong source
    msg = str(err.value)
    assert model_label(model) == "se_resnet18"  # the card names the model
    assert "\n" not in msg and "se_resnet18" in msg and "nothing was loaded" in msg
    report = err.value.report
    assert "layer1.0.se.fc1.weight" in report.missing and "layer0.conv1.weight" in report.unexpected
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    timm_sd = load_timm_fixture("seresnet18")[1]  # SE width 8 in stage 1; the legacy model has 4
    with pytest.raises(WeightLoadError, match="of another shape") as err:
        senet.load_weights(senet.create_model("legacy_se_resnet18"), timm_sd, source="timm")
    assert ("layer1.0.se.fc1.weight", (8, 64, 1, 1), (4, 64, 1, 1)) in err.value.report.mismatched
    assert "layer1.0.se.fc1.weight: (8, 64, 1, 1) vs (4, 64, 1, 1)" in err.value.report.describe()


def test_strict_false_loads_matching_and_reports():
    model = senet.create_model("resnet20", num_classes=10)
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items() if not k.startswith("fc.")}
    sd["extra.weight"] = torch.zeros(1)
    report = senet.load_weights(model, sd, source="senet", strict=False)
    assert report.missing == ["fc.weight", "fc.bias"] and report.unexpected == ["extra.weight"]
    assert torch.count_nonzero(model.conv1.weight) == 0


def test_files_and_wrapper_prefixes(tmp_path):
    src = senet.create_model("se_resnet20")
    dst = senet.create_model("se_resnet20")
    path = tmp_path / "ckpt.pt"
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    senet.load_weights(dst, path, source="senet")
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k])


def test_missing_and_corrupt_files(tmp_path):
    model = senet.create_model("resnet20")
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        senet.load_weights(model, tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightLoadError, match="bad.pt"):
        senet.load_weights(model, bad)
    with pytest.raises(ValueError, match="source='caffe'"):
        senet.load_weights(model, {}, source="caffe")
