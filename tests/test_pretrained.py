"""Pretrained weights by name, end to end without a network: a local file in the Cadene layout,
a Hugging Face cache laid out as huggingface_hub lays it out (timm layout), a torch.hub-style
cache and file:// download for URL weights, and the errors when nothing can be found."""

import hashlib
import json

import pytest
import torch

import senet
from senet.models.registry import get_model_spec, list_pretrained
from senet.weights.pretrained import PretrainedConfig, PretrainedWeightsError, imagenet_classes, resolve_weights

from conftest import FIXTURES, load_timm_fixture


def logits(model, x):
    with torch.no_grad():
        return model.double().eval()(x.double())


@pytest.fixture
def offline_env(tmp_path, monkeypatch):
    """Empty caches, offline: nothing may come from the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def test_local_cadene_file_gives_reference_logits(tmp_path):
    _, sd, x, ref = load_timm_fixture("legacy_seresnet50")
    path = tmp_path / "se_resnet50-cadene.pth"
    torch.save(sd, path)  # Cadene's pretrainedmodels layout: layer0.*, se_module, last_linear
    model = senet.create_model("legacy_se_resnet50", pretrained=str(path))
    assert (logits(model, x) - ref).abs().max().item() < 1e-6


def _hf_cache(root, repo: str, filename: str, data: bytes) -> None:
    """A cache exactly as huggingface_hub writes it: blobs named by hash, refs/main, snapshot link."""
    folder = root / f"models--{repo.replace('/', '--')}"
    blob = hashlib.sha256(data).hexdigest()
    (folder / "blobs").mkdir(parents=True)
    (folder / "blobs" / blob).write_bytes(data)
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(revision)
    snap = folder / "snapshots" / revision
    snap.mkdir(parents=True)
    (snap / filename).symlink_to(f"../../blobs/{blob}")


def test_offline_hub_cache_gives_reference_logits(offline_env):
    pytest.importorskip("huggingface_hub")
    from safetensors.torch import save

    _, sd, x, ref = load_timm_fixture("seresnet50")
    _hf_cache(offline_env / "hf", "timm/seresnet50.a1_in1k", "model.safetensors", save(sd))
    model = senet.create_model("se_resnet50", pretrained=True)
    assert (logits(model, x) - ref).abs().max().item() < 1e-6
    assert model.pretrained_cfg.hub_id == "timm/seresnet50.a1_in1k"
    # timm's name with its tag names the same weights
    model = senet.create_model("seresnet50.a1_in1k", pretrained=True)
    assert (logits(model, x) - ref).abs().max().item() < 1e-6


def test_prepared_url_cache_gives_reference_logits(offline_env):
    _, sd, x, ref = load_timm_fixture("legacy_seresnet50")
    cache = offline_env / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(sd, cache / "se_resnet50-ce0d4300.pth")  # the Cadene file name, as torch.hub stores it
    model = senet.create_model("legacy_seresnet50", pretrained=True)
    assert (logits(model, x) - ref).abs().max().item() < 1e-6


def test_url_download_checks_the_hash_in_the_name(offline_env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    _, sd, _, _ = load_timm_fixture("legacy_seresnet18")
    src = offline_env / "src.pth"
    torch.save(sd, src)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    good = offline_env / f"w-{digest[:8]}.pth"
    good.write_bytes(src.read_bytes())
    cfg = PretrainedConfig("in1k", source="legacy", url=good.as_uri())
    path = resolve_weights("legacy_se_resnet18", cfg)
    assert path == offline_env / "torch" / "hub" / "checkpoints" / good.name and path.read_bytes() == src.read_bytes()
    bad = offline_env / "w-deadbeef.pth"
    bad.write_bytes(src.read_bytes())
    with pytest.raises(PretrainedWeightsError, match="does not match the hash"):
        resolve_weights("x", PretrainedConfig("in1k", url=bad.as_uri()))
    assert not (offline_env / "torch" / "hub" / "checkpoints" / bad.name).exists()


def test_no_network_no_cache_says_what_to_download_and_where(offline_env, monkeypatch):
    target = offline_env / "torch" / "hub" / "checkpoints"
    with pytest.raises(PretrainedWeightsError) as err:
        senet.create_model("legacy_se_resnet50", pretrained=True)
    msg = str(err.value)
    assert "Download http://data.lip6.fr/cadene/pretrainedmodels/se_resnet50-ce0d4300.pth" in msg
    assert f"save it as {target / 'se_resnet50-ce0d4300.pth'}" in msg
    pytest.importorskip("huggingface_hub")
    with pytest.raises(PretrainedWeightsError) as err:
        senet.create_model("se_resnet50", pretrained=True)
    msg = str(err.value)
    assert "https://huggingface.co/timm/seresnet50.a1_in1k/resolve/main/model.safetensors" in msg
    assert str(target / "seresnet50.a1_in1k.safetensors") in msg and "offline" in msg
    # without huggingface_hub the same instructions, and the hand-placed file is then used
    monkeypatch.setitem(__import__("sys").modules, "huggingface_hub", None)
    with pytest.raises(PretrainedWeightsError, match=r"huggingface_hub is not installed.*senet\[hub\]"):
        senet.create_model("se_resnet50", pretrained=True)
    from safetensors.torch import save_file

    _, sd, x, ref = load_timm_fixture("seresnet50")
    target.mkdir(parents=True)
    save_file(sd, str(target / "seresnet50.a1_in1k.safetensors"))
    assert (logits(senet.create_model("se_resnet50", pretrained=True), x) - ref).abs().max().item() < 1e-6


def test_models_without_weights_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"'se_resnet20' has no published weights; models that have them: .*se_resnet50"):
        senet.create_model("se_resnet20", pretrained=True)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        senet.create_model("se_resnet20", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(TypeError, match="pretrained must be"):
        senet.create_model("se_resnet20", pretrained=3)
    with pytest.raises(ValueError, match="no pretrained tag 'b9_in1k'; known: a1_in1k"):
        senet.create_model("seresnet50.b9_in1k")


def test_num_classes_override_loads_all_but_the_classifier(tmp_path):
    _, sd, x, _ = load_timm_fixture("legacy_seresnet18")
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.warns(UserWarning, match=r"except the classifier \(fc.weight, fc.bias\)"):
        model = senet.create_model("legacy_se_resnet18", pretrained=path, num_classes=10)
    assert model.fc.out_features == 10
    ours = senet.weights.convert_state_dict(sd, "legacy")
    assert torch.equal(model.state_dict()["layer4.1.se.fc2.weight"], ours["layer4.1.se.fc2.weight"])
    # headless: pooled features of the pretrained trunk
    feats = senet.create_model("legacy_se_resnet18", pretrained=path, num_classes=0).eval()
    assert feats(x[:1, :, :64, :64]).shape == (1, 512)


# Shared fixtures (timm 1.0 layouts): the model each name maps to must take those weights.
@pytest.mark.parametrize("fixture", sorted(p.stem for p in (FIXTURES / "timm").glob("*.json")))
def test_fixture_keys_and_shapes_match_the_named_model(fixture):
    meta = json.loads((FIXTURES / "timm" / f"{fixture}.json").read_text())
    spec = get_model_spec(fixture)  # timm's name is accepted as an alias
    source = spec.pretrained[0].source if spec.pretrained else spec.layout
    sd = {k: torch.empty(s, device="meta") for k, s in meta["state_dict"]}
    sd = senet.weights.convert_state_dict(
        {k: v for k, v in sd.items() if not k.startswith(spec.pretrained[0].drop_keys if spec.pretrained else ())},
        source)
    with torch.device("meta"):
        model = senet.create_model(fixture)
    own = model.state_dict()
    assert sorted(sd) == sorted(own)
    assert all(tuple(sd[k].shape) == tuple(own[k].shape) for k in own)
    assert sum(p.numel() for p in model.parameters()) == meta["num_params"]


def test_every_published_config_is_consistent():
    for name in list_pretrained():
        spec = get_model_spec(name)
        for cfg in spec.pretrained:
            assert cfg.source == spec.layout, name
            assert cfg.num_classes == spec.defaults.get("num_classes", 1000)
            assert cfg.labels == "imagenet-1k" and cfg.input_size[0] == 3
            if name.startswith("legacy_"):
                assert cfg.url and cfg.url.endswith(".pth")
            else:
                assert cfg.hub_id.startswith("timm/") and cfg.hub_id.endswith("." + cfg.tag)


def test_imagenet_classes_ship_with_the_package():
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) >= 998
    assert names[0] == "tench" and names[1] == "goldfish" and names[999] == "toilet tissue"
