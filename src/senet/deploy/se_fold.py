"""SE without a pass over the unit's output: the excitation folded into the last 1x1 convolution.

An SE bottleneck unit (paper §3.3, Fig. 3) ends ``relu(u * s + shortcut)`` with ``u = W h + b``
the last 1x1 convolution (BN folded into ``W, b``) and ``s = excite(mean(u))`` (Eq. 2-3). The
product ``u * s`` is a pass over the unit's widest output that oneDNN cannot fuse into the
convolution, because ``s`` differs per sample. In inference the squeeze commutes with that
convolution, ``mean(W h + b) = W mean(h) + b``, so ``s`` can be computed from ``h`` (a quarter of
the channels) before the convolution runs, and the scale then folds into the convolution itself:
``u * s = (W * s) h + b * s``, one matrix product per sample with its own scaled weights
(a batched matrix product over channels_last ``h``), then the residual addition and ReLU. The
result equals the folded network's up to fp32 rounding (the sums are taken in another order).

It applies exactly where that algebra holds, checked per unit (:func:`why_not_foldable`): a
:class:`~senet.models.resnet.Bottleneck` with SE at the standard position, average squeeze, the
last convolution a plain 1x1 with stride 1, its BN already folded, a ReLU after the addition, no
stochastic depth and no hooks. Basic units (SE-ResNet-20/34) end with a 3x3 convolution, whose
mean is not the convolution of the mean at the borders: they are left as they are.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError
from ..layers.se import SqueezeExcite
from ..models.resnet import Bottleneck

__all__ = ["SEFoldedBottleneck", "fold_se", "why_not_foldable", "se_foldable_units"]


def _hooked(module: nn.Module) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def why_not_foldable(block: nn.Module, *, bn_folded: bool = True) -> str | None:
    """Why the SE of ``block`` cannot be folded into its last convolution, or None when it can.
    ``bn_folded=False`` skips the check that the last BN was already folded (for a network that
    :func:`senet.fold_for_inference` has not seen yet)."""
    if type(block) is not Bottleneck:
        return f"{type(block).__name__} is not a bottleneck unit"
    se, conv = block.se, block.conv3
    if block.position != "standard" or type(se) is not SqueezeExcite or se.squeeze_kind != "avg":
        return "no SE with average squeeze at the standard position"
    if block.drop_path is not None or se.fused:
        return "stochastic depth or the fused SE operator"
    if not (type(conv) is nn.Conv2d and conv.kernel_size == (1, 1) and conv.stride == (1, 1)
            and conv.padding == (0, 0) and conv.dilation == (1, 1) and conv.groups == 1
            and conv.padding_mode == "zeros"):
        return "the last convolution is not a plain 1x1"
    if bn_folded and type(block.bn3) is not nn.Identity:
        return "the last BatchNorm is not folded"
    if type(block.act_out) is not nn.ReLU or _hooked(block):
        return "another activation after the addition, or hooks"
    return None


class SEFoldedBottleneck(nn.Module):
    """A folded SE bottleneck unit for inference with the excitation folded into its last 1x1
    convolution (module docstring). Holds the unit's own modules under the same names, so its
    ``state_dict`` keys are the unit's."""

    def __init__(self, block: Bottleneck) -> None:
        super().__init__()
        reason = why_not_foldable(block)
        if reason is not None:
            raise UserInputError(f"cannot fold the SE of this unit: {reason}")
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "se", "act_out", "downsample"):
            setattr(self, name, getattr(block, name))
        if self.conv3.bias is None:
            self.conv3.bias = nn.Parameter(torch.zeros(self.conv3.out_channels, dtype=self.conv3.weight.dtype,
                                                       device=self.conv3.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        n, width, height, breadth = h.shape
        weight = self.conv3.weight.flatten(1)  # (C, width)
        bias = self.conv3.bias
        u = F.linear(h.mean((2, 3)), weight, bias)  # mean(W h + b) = W mean(h) + b: the squeeze, Eq. 2
        s = self.se.scale(u[:, :, None, None]).flatten(1)  # Eq. 3; the squeeze of a 1x1 map is the map
        # (N, H*W, width) @ (N, width, C): a view of channels_last h, and the product comes out channels_last.
        rows = h.permute(0, 2, 3, 1).reshape(n, height * breadth, width)
        out = torch.baddbmm((bias * s).unsqueeze(1), rows, weight.t().unsqueeze(0) * s.unsqueeze(1))
        out = out.view(n, height, breadth, -1).permute(0, 3, 1, 2)
        return self.act_out(out.add_(shortcut))  # out is this call's own tensor


def se_foldable_units(model: nn.Module, *, bn_folded: bool = True) -> list[str]:
    """Qualified names of the units of ``model`` whose SE :func:`fold_se` folds."""
    return [name for name, m in model.named_modules() if why_not_foldable(m, bn_folded=bn_folded) is None]


def fold_se(net: nn.Module) -> list[str]:
    """Replace, in place, every unit of ``net`` (BN already folded, :func:`senet.fold_for_inference`)
    whose SE can be folded by a :class:`SEFoldedBottleneck`; returns their names."""
    names = se_foldable_units(net)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, child, SEFoldedBottleneck(owner.get_submodule(child)))
    return names
