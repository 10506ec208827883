"""Excitation statistics on hand-set gates with a known answer (paper §7.2)."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import senet
from senet.analysis import GateRecorder, fixed_gates, gate_removal_study, record_excitations, se_blocks
from senet.analysis.figures import pick_blocks, plot_block_summary, plot_class_excitations


def hand_set_model() -> nn.Sequential:
    """Two SE blocks on 2 channels. Block a: gate = sigmoid(2 * relu(mean of channel 0)) on channel 0,
    sigmoid(0) = 0.5 on channel 1. Block b: gate = sigmoid(12) on both channels (near identity)."""
    a = senet.SqueezeExcite(2, width=1)
    b = senet.SqueezeExcite(2, width=1)
    with torch.no_grad():
        a.fc1.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1)); a.fc1.bias.zero_()
        a.fc2.weight.copy_(torch.tensor([2.0, 0.0]).view(2, 1, 1, 1)); a.fc2.bias.zero_()
        b.fc1.weight.zero_(); b.fc1.bias.zero_()
        b.fc2.weight.zero_(); b.fc2.bias.fill_(12.0)
    return nn.Sequential(a, b)


def batches():
    # class 0: all-zero images; class 1: all-one images; uneven class sizes, two batches
    x0, x1 = torch.zeros(3, 2, 4, 4), torch.ones(5, 2, 4, 4)
    yield torch.cat([x0[:2], x1[:1]]), torch.tensor([0, 0, 1])
    yield torch.cat([x0[2:], x1[1:]]), torch.tensor([0, 1, 1, 1, 1])


def test_known_answer():
    stats = record_excitations(hand_set_model(), batches(), 2, classes=["zeros", "ones"])
    assert stats.blocks == ["0", "1"]
    assert stats.counts.tolist() == [3, 5]
    s2 = 1 / (1 + math.exp(-2))
    np.testing.assert_allclose(stats.class_means["0"], [[0.5, 0.5], [s2, 0.5]], rtol=1e-6)
    np.testing.assert_allclose(stats.overall_mean["0"], [(3 * 0.5 + 5 * s2) / 8, 0.5], rtol=1e-6)
    # channel 0 is fully determined by the class (eta^2 = 1); channel 1 never varies (0)
    assert stats.specificity["0"] == pytest.approx(0.5, abs=1e-9)
    assert stats.near_identity["0"] == 0.0
    assert stats.specificity["1"] == pytest.approx(0.0, abs=1e-9)
    assert stats.near_identity["1"] == 1.0


def test_specificity_between_zero_and_one_with_within_class_noise():
    model = hand_set_model()
    g = torch.Generator().manual_seed(0)
    data = [(torch.rand(16, 2, 4, 4, generator=g) + y.view(-1, 1, 1, 1), y)
            for y in [torch.randint(0, 2, (16,), generator=g) for _ in range(4)]]
    stats = record_excitations(model, data, 2)
    assert 0.0 < stats.specificity["0"] < 0.5  # channel 0 mostly, but not only, class-driven


def test_recorder_hooks_are_removed_and_model_restored():
    model = hand_set_model().train()
    with GateRecorder(model) as rec:
        model(torch.ones(1, 2, 3, 3))
        assert set(rec.last) == {"0", "1"} and rec.last["0"].shape == (1, 2)
    assert all(not m.gate._forward_hooks for m in se_blocks(model).values())
    record_excitations(model, batches(), 2)
    assert model.training


def test_fixed_gates_and_removal_study():
    model = hand_set_model()
    x = torch.ones(2, 2, 3, 3)
    stats = record_excitations(model, batches(), 2)
    with fixed_gates(model, ["0", "1"], "one"):
        assert torch.equal(model(x), x)
    with fixed_gates(model, ["0"], "mean", stats):
        expected = x * torch.tensor(stats.overall_mean["0"], dtype=torch.float32).view(1, 2, 1, 1)
        torch.testing.assert_close(model[0](x), expected)
    assert not isinstance(model[0].gate, senet.ConstantGate)  # restored
    out = gate_removal_study(model, stats, ["1"], lambda m: {"sum": float(m(x).detach().sum())})
    assert out["params_saved"] == sum(p.numel() for p in model[1].parameters())
    assert out["fixed_one"]["sum"] != out["learned"]["sum"]


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no SE blocks"):
        record_excitations(nn.Sequential(nn.Identity()), batches(), 2)
    with pytest.raises(ValueError, match="labels must lie"):
        record_excitations(hand_set_model(), batches(), 1)
    with pytest.raises(ValueError, match="stats"):
        with fixed_gates(hand_set_model(), ["0"], "mean"):
            pass
    with pytest.raises(ValueError, match="not SE blocks"):
        GateRecorder(hand_set_model(), ["layer9"])


def test_figures_written(tmp_path):
    model = senet.create_model("se_resnet20", num_classes=3)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    stats = record_excitations(model, data, 3, classes=["a", "b", "c"])
    assert len(stats.blocks) == 9
    assert pick_blocks(stats.blocks) == ["layer1.0.se", "layer2.0.se", "layer2.2.se", "layer3.2.se"]
    for path in (plot_class_excitations(stats, tmp_path / "fig6.png"), plot_block_summary(stats, tmp_path / "s.png")):
        assert path.stat().st_size > 10_000 and path.read_bytes()[:4] == b"\x89PNG"
