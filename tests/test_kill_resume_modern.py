"""Kill a run with every part of the modern recipe on (Mixup/CutMix, BCE, RandAugment, random
erasing, repeated augmentation, LAMB, EMA), resume it, and get the files of an uninterrupted run:
weights, EMA, optimiser state and history bit-identical."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from senet.train import fit
from senet.train.progress import Reporter
from senet.weights.checkpoint import read_weights

from tiny_run import tiny_config, untimed

TESTS = Path(__file__).parent
MODERN = ["mix.mixup_alpha=0.8", "mix.cutmix_alpha=1.0", "mix.mode=elem", "loss=bce", "bce_target_thresh=0.2",
          "label_smoothing=0.1", "data.randaugment=rand-m7-mstd0.5-inc1", "data.reprob=0.25", "data.aug_repeats=2",
          "optim.name=lamb", "optim.lr=0.01", "optim.weight_decay=0.02", "optim.decay_norm_and_bias=false",
          "ema_decay=0.9"]
# Dies (like SIGKILL, no cleanup) right after the second epoch's state file is renamed into place.
RUNNER = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tiny_run import tiny_config
from senet.train import fit
from senet.train.progress import Reporter
real, seen = os.replace, []
def replace(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if Path(dst).name == "last_state.pt":
        seen.append(dst)
        if len(seen) == 2:
            os._exit(9)
os.replace = replace
fit(tiny_config(*sys.argv[3:]), sys.argv[2], device="cpu", reporter=Reporter())
"""


def _state(run):
    return torch.load(run / "checkpoints/last_state.pt", weights_only=True)


def _assert_same(want_run, got_run):
    want, got = _state(want_run), _state(got_run)
    assert want["epoch"] == got["epoch"]
    assert untimed(want["history"]) == untimed(got["history"])
    for key in want["model"]:
        assert torch.equal(want["model"][key], got["model"][key]), key
    for key in want["ema"]:  # the average continued exactly (n_averaged included)
        assert torch.equal(want["ema"][key], got["ema"][key]), key
    for p, s in want["optimizer"]["state"].items():  # LAMB's moments and step
        for k, v in s.items():
            assert torch.equal(v, got["optimizer"]["state"][p][k]), (p, k)
    a, _ = read_weights(want_run / "checkpoints/last.safetensors")
    b, _ = read_weights(got_run / "checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_stop_and_resume_with_every_modern_part_is_bit_identical(tmp_path):
    cfg = tiny_config(*MODERN, "epochs=2")
    straight = fit(cfg, tmp_path / "straight", device="cpu", reporter=Reporter())
    assert "ema_top1_err" in straight.history[-1]
    fit(cfg, tmp_path / "stopped", device="cpu", stop_after=1, reporter=Reporter())
    torch.manual_seed(123)  # a resumed process starts from other global RNG states
    fit(cfg, tmp_path / "stopped", device="cpu", resume=True, reporter=Reporter())
    _assert_same(tmp_path / "straight", tmp_path / "stopped")


@pytest.mark.slow
def test_kill_and_resume_with_every_modern_part_is_bit_identical(tmp_path):
    fit(tiny_config(*MODERN), tmp_path / "straight", device="cpu", reporter=Reporter())
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(TESTS), str(killed), *MODERN], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()[-2000:]
    assert _state(killed)["epoch"] == 2
    fit(tiny_config(*MODERN), killed, device="cpu", resume=True, reporter=Reporter())
    _assert_same(tmp_path / "straight", killed)


def test_the_ema_weights_are_a_checkpoint_of_their_own(tmp_path):
    run = tmp_path / "run"
    result = fit(tiny_config(*MODERN, "epochs=2"), run, device="cpu", reporter=Reporter())
    tensors, meta = read_weights(run / "checkpoints/ema.safetensors")
    ema = _state(run)["ema"]  # AveragedModel's state: the averaged network under "module."
    assert set(tensors) == {k[len("module."):] for k in ema if k.startswith("module.")}
    for key, value in tensors.items():
        assert torch.equal(value, ema["module." + key]), key
    raw, _ = read_weights(run / "checkpoints/last.safetensors")
    assert any(not torch.equal(raw[k], tensors[k]) for k in raw)  # the average, not the raw weights
    assert meta.epoch == 2 and meta.top1_err == result.history[-1]["ema_top1_err"]
    assert meta.card == result.card.to_dict()  # the card as data (weights/ is file IO)


def test_without_ema_no_ema_file_is_written(tmp_path):
    fit(tiny_config("epochs=1"), tmp_path / "run", device="cpu", reporter=Reporter())
    assert (tmp_path / "run/checkpoints/last.safetensors").is_file()
    assert not (tmp_path / "run/checkpoints/ema.safetensors").exists()
