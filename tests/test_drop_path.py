"""Stochastic depth (``drop_path_rate``): timm's per-block linear rule in every residual family,
exactly today's network at 0, active only in training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import senet
from senet.models.common import DropPath, drop_path, drop_path_rates
from senet.models.registry import get_model_spec

# One model per residual family, reduced in depth (Inception-ResNet has no depth argument: it
# is built on the meta device where only structure matters).
RESIDUAL = [
    ("se_resnet20", {"layers": (1, 2, 1)}),
    ("se_resnet50", {"layers": (1, 2, 1, 1), "widths": (16, 16, 32, 32)}),
    ("senet154", {"layers": (1, 1, 2, 1), "widths": (32, 32, 64, 64), "stem_width": 16}),
    ("se_preact_resnet164", {"layers": (1, 2, 1)}),
    ("se_wrn16_8", {"layers": (1, 1, 1), "widths": (16, 32, 64)}),
    ("se_shufflenet_v1_g3", {}),
]


def _build(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return senet.create_model(name, num_classes=5, **kw)


def test_the_linear_rule():
    assert drop_path_rates(0.1, 5) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert drop_path_rates(0.3, 1) == [0.0]
    assert drop_path_rates(0.0, 3) == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("name,kw", RESIDUAL, ids=[n for n, _ in RESIDUAL])
def test_zero_is_todays_network_bit_for_bit(name, kw):
    today = _build(name, **kw).eval()
    zero = _build(name, drop_path_rate=0.0, **kw).eval()
    assert not any(isinstance(m, DropPath) for m in zero.modules())
    assert list(zero.state_dict()) == list(today.state_dict())
    for (k, a), b in zip(today.state_dict().items(), zero.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(zero(x), today(x))
    zero.train(), today.train()
    torch.manual_seed(1)
    a = zero(x)
    torch.manual_seed(1)
    assert torch.equal(a, today(x))


@pytest.mark.parametrize("name,kw", RESIDUAL, ids=[n for n, _ in RESIDUAL])
def test_rates_follow_the_per_block_rule_and_keys_stay(name, kw):
    model = _build(name, drop_path_rate=0.2, **kw)
    plain = _build(name, **kw)
    assert list(model.state_dict()) == list(plain.state_dict())  # published weights still load
    blocks = [m for m in model.modules() if hasattr(m, "drop_path")]
    rates = drop_path_rates(0.2, len(blocks))
    got = [b.drop_path.p if b.drop_path is not None else 0.0 for b in blocks]
    if name.startswith("se_shufflenet"):  # strided units concatenate: no residual sum to drop
        rates = [r if b.stride == 1 else 0.0 for r, b in zip(rates, blocks)]
    assert got == pytest.approx(rates)
    assert got[-1] == pytest.approx(0.2)


def test_inception_resnet_has_forty_blocks_on_the_rule():
    with torch.device("meta"):
        model = senet.create_model("se_inception_resnet_v2", drop_path_rate=0.39)
    got = [m.drop_path.p if m.drop_path is not None else 0.0 for m in model.modules() if hasattr(m, "drop_path")]
    assert got == pytest.approx(drop_path_rates(0.39, 40))
    assert got[1] == pytest.approx(0.01)


def test_drop_path_only_in_training():
    x = torch.ones(4000, 3, 2, 2)
    assert drop_path(x, 0.25, training=False) is x
    out = drop_path(x, 0.25, training=True)
    per_sample = out.flatten(1)
    # Each sample's whole branch is kept (scaled by 1/0.75) or dropped.
    kept = per_sample[per_sample != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.75))
    assert torch.all(per_sample.min(1).values == per_sample.max(1).values)
    dropped = (per_sample[:, 0] == 0).float().mean().item()
    assert 0.2 < dropped < 0.3
    module = DropPath(0.25).eval()
    assert module(x) is x


def test_a_short_training_run_with_drop_path():
    model = _build("se_resnet20", drop_path_rate=0.1, layers=(1, 1, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 5, (8,))
    losses = []
    for _ in range(4):
        model.train()
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: deterministic, no branch dropped
    model.train()
    torch.manual_seed(3)
    a = model(x)
    torch.manual_seed(4)
    assert not torch.equal(a, model(x))  # training: branches dropped at random


def test_the_card_rebuilds_stochastic_depth():
    model = senet.create_model("se_resnet20", drop_path_rate=0.1, drop_rate=0.2, global_pool="avgmax")
    rebuilt = model.pretrained_cfg.build()
    assert [getattr(m, "p", None) for m in rebuilt.modules() if isinstance(m, (DropPath, nn.Dropout))] == \
        [getattr(m, "p", None) for m in model.modules() if isinstance(m, (DropPath, nn.Dropout))]
    assert rebuilt.global_pool.pool_type == "avgmax"


@pytest.mark.parametrize("name", ["se_densenet121", "se_vgg16", "se_mobilenet_v1", "se_inception_v3"])
def test_families_without_a_residual_branch_refuse_it(name):
    assert "drop_path_rate" not in get_model_spec(name).arguments()
    with pytest.raises(TypeError, match="drop_path_rate"):
        senet.create_model(name, drop_path_rate=0.1)


def test_bad_rates_fail_naming_the_argument():
    with pytest.raises(ValueError, match="drop_path_rate"):
        senet.create_model("se_resnet20", drop_path_rate=1.0)
    with pytest.raises(ValueError, match="drop_path_rate"):
        senet.create_model("se_resnet20", drop_path_rate=-0.1)
