"""SE without a pass over the unit's output: the excitation folded into the last 1x1 convolution.

An SE bottleneck unit (paper §3.3, Fig. 3) ends ``relu(u * s + shortcut)`` with ``u = W h + b``
the last 1x1 convolution (BN folded into ``W, b``) and ``s = excite(mean(u))`` (Eq. 2-3). The
product ``u * s`` is a pass over the unit's widest output that oneDNN cannot fuse into the
convolution, because ``s`` differs per sample. In inference the squeeze commutes with that
convolution, ``mean(W h + b) = W mean(h) + b``, so ``s`` can be computed from ``h`` (a quarter of
the channels) before the convolution runs, and the scale then folds into the convolution itself:
``u * s = (W * s) h + b * s``. On the CPU each sample then runs one oneDNN convolution with its own
scaled weights and the residual addition and ReLU fused as post-ops, written in place into the
shortcut: the unit's output is written once, as in the plain unit. Elsewhere it is one batched
matrix product over channels_last ``h``. The result equals the folded network's up to fp32
rounding (the sums are taken in another order).

Scaling the weights costs ``C x width`` per sample and saves a pass over ``C x H x W``: units fold
only where the map is large against the width (:func:`folds_at`); the others keep their own end.

It applies exactly where that algebra holds, checked per unit (:func:`why_not_foldable`): a
:class:`~senet.models.resnet.Bottleneck` with SE at the standard position, average squeeze, the
last convolution a plain 1x1 with stride 1, its BN already folded, a ReLU after the addition, no
stochastic depth and no hooks. Basic units (SE-ResNet-20/34) end with a 3x3 convolution, whose
mean is not the convolution of the mean at the borders: they are left as they are.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError
from ..layers.se import SqueezeExcite
from ..models.resnet import Bottleneck, merge_branches

__all__ = ["SEFoldedBottleneck", "fold_se", "folds_at", "why_not_foldable", "se_foldable_units",
           "FOLD_MIN_PIXELS_PER_CHANNEL"]


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


# Folding scales the last convolution's weights (C x width) once per sample to save one pass over
# the unit's output (C x H x W): it pays where the map is large against the width. On SE-ResNet-50
# at 224 px (docs/results.md, "Where the SE fold pays"), folding the first two stages (56 x 56
# against 64, 28 x 28 against 128: ratios 49 and 6.1) beat no fold at batch 8 in two runs, and
# folding every stage lost in both (the third stage's ratio is 0.77, the fourth's 0.1). Those runs
# compiled the folded networks in pieces; as one graph the fold at these stages lost by 3-5% in the
# one run since, which is why prepare_for_inference leaves it off by default.
FOLD_MIN_PIXELS_PER_CHANNEL = 4


class SEFoldedBottleneck(nn.Module):
    """A folded SE bottleneck unit for inference with the excitation folded into its last 1x1
    convolution (module docstring). Holds the unit's own modules under the same names, so its
    ``state_dict`` keys are the unit's."""

    def __init__(self, block: Bottleneck, min_pixels_per_channel: float = FOLD_MIN_PIXELS_PER_CHANNEL) -> None:
        super().__init__()
        self.min_pixels_per_channel = min_pixels_per_channel  # folds_at's threshold, per unit
        reason = why_not_foldable(block)
        if reason is not None:
            raise UserInputError(f"cannot fold the SE of this unit: {reason}")
        for name in ("conv1", "bn1", "act1", "conv2", "bn2", "act2", "conv3", "se", "act_out", "downsample"):
            setattr(self, name, getattr(block, name))
        # Read here, not in forward: Dynamo does not trace torch.backends, and a graph break in
        # each unit would split the compiled network.
        self.onednn = torch.backends.mkldnn.is_available()
        if self.conv3.bias is None:
            self.conv3.bias = nn.Parameter(torch.zeros(self.conv3.out_channels, dtype=self.conv3.weight.dtype,
                                                       device=self.conv3.weight.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.act2(self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x))))))
        if not folds_at(h.shape, self.min_pixels_per_channel):
            return merge_branches(self.se, self.conv3(h), shortcut, self.act_out, False)
        weight, bias = self.conv3.weight, self.conv3.bias
        u = F.linear(h.mean((2, 3)), weight.flatten(1), bias)  # mean(W h + b) = W mean(h) + b: the squeeze, Eq. 2
        s = self.se.scale(u[:, :, None, None]).flatten(1)  # Eq. 3; the squeeze of a 1x1 map is the map
        if self.onednn and _onednn_serves(h, shortcut):
            out = shortcut.contiguous(memory_format=torch.channels_last)
            if out is x and not torch.compiler.is_compiling():
                out = out.clone()  # eager: never write into the unit's input (a compiled graph copies when it must)
            torch.ops.senet.scaled_conv1x1_add_relu_(out, h, weight, bias, s)
            return out
        n, width, height, breadth = h.shape
        # (N, H*W, width) @ (N, width, C): a view of channels_last h, and the product comes out channels_last.
        rows = h.permute(0, 2, 3, 1).reshape(n, height * breadth, width)
        out = torch.baddbmm((bias * s).unsqueeze(1), rows, weight.flatten(1).t().unsqueeze(0) * s.unsqueeze(1))
        out = out.view(n, height, breadth, -1).permute(0, 3, 1, 2)
        return self.act_out(out.add_(shortcut))  # out is this call's own tensor


def folds_at(shape: Sequence[int], min_pixels_per_channel: float = FOLD_MIN_PIXELS_PER_CHANNEL) -> bool:
    """Whether a unit whose last convolution reads features of ``shape`` (N, width, H, W) folds its
    SE, or keeps the unit's own end (:data:`FOLD_MIN_PIXELS_PER_CHANNEL`)."""
    return shape[2] * shape[3] >= min_pixels_per_channel * shape[1]


def _onednn_serves(h: torch.Tensor, shortcut: torch.Tensor) -> bool:
    """Whether oneDNN's convolution with a fused addition and ReLU runs this unit (on a torch built
    with oneDNN): fp32 CPU tensors. Elsewhere the unit runs as one batched matrix product."""
    return h.device.type == "cpu" and h.dtype == torch.float32 and shortcut.dtype == torch.float32


@torch.library.custom_op("senet::scaled_conv1x1_add_relu_", mutates_args=("out",))
def _scaled_conv1x1_add_relu_(out: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                              scale: torch.Tensor) -> None:
    """``out[n] = relu(conv1x1(h[n], weight * scale[n], bias * scale[n]) + out[n])`` for each sample,
    in place: one oneDNN convolution per sample with the sum and ReLU fused as post-ops, so the
    unit's output is written once (module docstring)."""
    for n in range(h.shape[0]):
        torch.ops.mkldnn._convolution_pointwise_.binary(
            out[n:n + 1], h[n:n + 1], weight * scale[n, :, None, None, None], bias * scale[n],
            [0, 0], [1, 1], [1, 1], 1, "add", 1.0, "relu", [], "")


@_scaled_conv1x1_add_relu_.register_fake
def _(out: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, scale: torch.Tensor) -> None:
    return None


def se_foldable_units(model: nn.Module, *, bn_folded: bool = True) -> list[str]:
    """Qualified names of the units of ``model`` whose SE :func:`fold_se` folds."""
    return [name for name, m in model.named_modules() if why_not_foldable(m, bn_folded=bn_folded) is None]


def fold_se(net: nn.Module, example: torch.Tensor | None = None) -> list[str]:
    """Replace, in place, every unit of ``net`` (BN already folded, :func:`senet.fold_for_inference`)
    whose SE can be folded by a :class:`SEFoldedBottleneck`; returns their names. With ``example``
    (a batch of the size to serve), only the units that fold at that size (:func:`folds_at`)."""
    names = se_foldable_units(net)
    if example is not None:
        shapes = _last_convolution_inputs(net, names, example[:1])
        names = [name for name in names if folds_at(shapes[name])]
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = net.get_submodule(parent) if parent else net
        setattr(owner, child, SEFoldedBottleneck(owner.get_submodule(child)))
    return names


def _last_convolution_inputs(net: nn.Module, names: Sequence[str], x: torch.Tensor) -> dict[str, torch.Size]:
    """The shape of what each unit's last convolution reads, from one forward pass over ``x``."""
    shapes: dict[str, torch.Size] = {}
    hooks = [net.get_submodule(name).conv3.register_forward_pre_hook(
        lambda module, args, name=name: shapes.__setitem__(name, args[0].shape)) for name in names]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes
