"""Pretrained loading with huggingface_hub but no network fails at once, without the retry loop,
with the same instructions as without the package."""

import logging
import sys

import pytest

import senet
from senet.weights.pretrained import PretrainedWeightsError

hub = pytest.importorskip("huggingface_hub")


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """Empty caches; the Hugging Face endpoint is a closed loopback port; every download counted."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    for var in ("HF_HUB_OFFLINE", "SENET_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
                "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    calls = []
    real = hub.hf_hub_download

    def counting(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(hub, "hf_hub_download", counting)
    return calls


def _instructions(msg: str) -> str:
    return msg[msg.index("Download "):]


def test_unreachable_hub_fails_at_once_with_the_same_instructions(no_hub, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING), pytest.raises(PretrainedWeightsError) as err:
        senet.create_model("se_resnet50", pretrained=True)
    msg = str(err.value)
    assert "could not be reached" in msg and "127.0.0.1:9" in msg and len(msg.splitlines()) == 1
    assert no_hub == []  # no download was attempted, so nothing was retried
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # the same advice without the package
    with pytest.raises(PretrainedWeightsError) as without:
        senet.create_model("se_resnet50", pretrained=True)
    assert _instructions(str(without.value)) == _instructions(msg)


def test_offline_mode_asks_the_cache_only(no_hub, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with caplog.at_level(logging.WARNING), pytest.raises(PretrainedWeightsError, match="offline"):
        senet.create_model("se_resnet50", pretrained=True)
    assert no_hub and all(no_hub)  # each published file looked up once, in the local cache only
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
