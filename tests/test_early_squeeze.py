"""Inference squeezes a bottleneck's 1x1 expansion input instead of its output (Bottleneck.branch).

mean_hw(bn3(conv3(a))) = bn3(W3 mean_hw(a) + b3) for a 1x1 stride-1 conv and an eval-mode BN, so
the result must equal the plain order up to float rounding, and every case where the identity
does not hold, or where something observes the squeeze, must keep the plain order.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import senet
from senet.fold import fold_for_inference
from senet.layers.se import SqueezeExcite
from senet.models.resnet import Bottleneck

BOTTLENECK_MODELS = ["se_resnet50", "se_resnext50_32x4d", "senet154", "legacy_se_resnet50"]


def small(name: str, **kw) -> nn.Module:
    torch.manual_seed(0)
    model = senet.create_model(name, layers=(1, 1, 1, 1), num_classes=7, **kw)
    for m in model.modules():  # BN statistics as training leaves them, so BN is not an identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


@pytest.fixture
def scale_calls(monkeypatch) -> list[int]:
    """Counts SqueezeExcite.scale calls: the early path calls only excite(), never scale()."""
    calls = [0]
    scale = SqueezeExcite.scale

    def counting(self, x):
        calls[0] += 1
        return scale(self, x)

    monkeypatch.setattr(SqueezeExcite, "scale", counting)
    return calls


@pytest.mark.parametrize("name", BOTTLENECK_MODELS)
def test_early_squeeze_equals_plain_order(name, scale_calls):
    model = small(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.enable_grad():
        reference = model(x)  # gradients recorded: the plain order, allocating
    assert scale_calls[0] == 4
    with torch.inference_mode():
        early = model(x)
    assert scale_calls[0] == 4, "inference did not take the early squeeze"
    torch.testing.assert_close(early, reference.detach(), rtol=1e-5, atol=1e-5)
    for block in model.modules():
        if isinstance(block, Bottleneck):
            block.squeeze_early = False
    with torch.inference_mode():
        late = model(x)
    assert scale_calls[0] == 8
    torch.testing.assert_close(early, late, rtol=1e-5, atol=1e-5)


def test_early_squeeze_after_folding(scale_calls):
    model = small("se_resnet50")
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = model(x)
        folded = fold_for_inference(model, example_input=x)
        assert type(folded.layer1[0].bn3) is nn.Identity and folded.layer1[0].conv3.bias is not None
        calls = scale_calls[0]
        out = folded(x)
    assert scale_calls[0] == calls, "a folded bottleneck (conv bias, no BN) should squeeze early"
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-4)


def test_cases_that_keep_the_plain_order(scale_calls):
    x = torch.randn(2, 3, 64, 64)
    model = small("se_resnet50")
    with torch.inference_mode():
        model.train()  # batch statistics: the mean does not commute with BN
        model(x)
        assert scale_calls[0] == 4
        model.eval()
        seen = []
        hook = model.layer2[0].se.squeeze.register_forward_hook(lambda m, i, o: seen.append(o.shape))
        model(x)  # a hook on the squeeze sees the squeeze of the block output, as before
        assert seen == [(2, 512, 1, 1)] and scale_calls[0] == 5
        hook.remove()
        traced = torch.jit.trace(model, x, check_trace=False)  # exported graphs keep the paper's order
        assert scale_calls[0] == 9
        torch.testing.assert_close(traced(x), model(x), rtol=1e-5, atol=1e-5)
    maxed = small("se_resnet50", se_squeeze="max")
    with torch.inference_mode():
        maxed(x)
    assert scale_calls[0] == 13


def test_plain_bottleneck_unchanged():
    model = small("se_resnet50", se=None)
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        out = model(x)
    with torch.enable_grad():
        reference = model(x)
    torch.testing.assert_close(out, reference.detach(), rtol=0, atol=0)
