"""The last edges of the boundaries: checks made before work starts, outputs beside the run, an
exported file refused where a network is expected, and files a refused resume leaves alone."""

from __future__ import annotations

import pytest

import senet.cost.speed as speed
from senet.cli import main
from senet.cost.memory import available_memory, check_models_fit, forward_bytes
from senet.errors import UserInputError


def _one_line(capsys, *expected: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err and "internal error" not in err, err
    for text in expected:
        assert text in lines[0], err
    return lines[0]


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the input size was checked")


@pytest.mark.skipif(available_memory() is None, reason="free memory cannot be read on this system")
def test_benchmark_refuses_an_input_that_cannot_fit_before_any_work(capsys, monkeypatch):
    monkeypatch.setattr(speed, "benchmark", _no_work)
    # 3x20000x20000 at the CPU's batch of 8: the input alone is 38 GiB, a forward pass over 400.
    assert main(["benchmark", "se_resnet20", "--device", "cpu", "--input-size", "3x20000x20000"]) == 2
    line = _one_line(capsys, "input_size 3x20000x20000 needs more than", "GiB for a forward pass at batch 8")
    need = float(line.split("needs more than ")[1].split(" GiB")[0])
    assert need > available_memory() / 2**30


@pytest.mark.skipif(available_memory() is None, reason="free memory cannot be read on this system")
def test_tune_refuses_an_input_that_cannot_fit_before_any_work(capsys, monkeypatch):
    import senet.deploy.tuner as tuner

    monkeypatch.setattr(tuner, "tune", _no_work)
    assert main(["tune", "se_resnet20", "--input-size", "3x20000x20000", "--batch-size", "4"]) == 2
    _one_line(capsys, "input_size 3x20000x20000 needs more than", "at batch 4")


def test_the_estimate_is_the_input_and_two_of_the_largest_outputs(monkeypatch):
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
    assert forward_bytes(net, (3, 10, 10), 2) == 4 * (2 * 3 * 100 + 2 * 2 * 8 * 100)
    assert next(net.parameters()).device.type == "cpu" and not net._forward_hooks  # the caller's net untouched
    monkeypatch.setattr("senet.cost.memory.available_memory", lambda device=None: 2**20)
    check_models_fit(["se_resnet20"], (3, 32, 32), 1)  # ~1 MiB of activations: fits
    with pytest.raises(UserInputError, match="input_size 3x256x256 needs more than"):
        check_models_fit(["se_resnet20"], (3, 256, 256), 8)
