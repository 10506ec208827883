"""The Squeeze-and-Excitation block (Hu et al., arXiv 1709.01507, §3, Eq. 2-4).

One module, :class:`SqueezeExcite`, is used by every network of the project and by the
retrofitting tool. It computes a per-channel scale from the input (``scale``) apart from
applying it (``forward``), and keeps the gate non-linearity as a named submodule
(``gate``) so analysis code can hook the excitation without forking the model.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError, UserTypeError
from ..validation import check_choice
from . import fused_se

__all__ = [
    "SEConfig",
    "SqueezeExcite",
    "ConstantGate",
    "se_width",
    "SQUEEZES",
    "GATES",
    "ACTIVATIONS",
    "POSITIONS",
    "FC_TYPES",
]


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6: a piecewise-linear sigmoid (the gate of MobileNetV3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu6(x + 3.0) / 6.0


class ConstantGate(nn.Module):
    """A gate that ignores its input and returns ``value`` (a scalar or a per-channel tensor).

    Swapped in for an SE block's ``gate`` it turns the block into a fixed channel scaling:
    ``value=1`` removes the block's effect exactly (paper §7.2, "SE blocks in the last stage
    can be removed"), a per-channel tensor holds the gate at its dataset mean.
    """

    def __init__(self, value: float | torch.Tensor = 1.0) -> None:
        super().__init__()
        self.register_buffer("value", torch.as_tensor(value, dtype=torch.float32), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.value.to(dtype=x.dtype)
        if value.ndim == 1:  # one value per channel
            value = value.view(1, -1, *([1] * (x.ndim - 2)))
        return value.expand_as(x)


# Squeeze operators (paper §3.1 and Table 11; "none" is NoSqueeze of Table 16).
SQUEEZES: dict[str, Callable[[], nn.Module]] = {
    "avg": lambda: nn.AdaptiveAvgPool2d(1),
    "max": lambda: nn.AdaptiveMaxPool2d(1),
    "none": nn.Identity,
}
# Gate non-linearities sigma of Eq. 3 (sigmoid) and the alternatives of Table 12.
GATES: dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "hard_sigmoid": HardSigmoid,
}
# The non-linearity delta between the two FCs of Eq. 3 (ReLU in the paper).
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "silu": lambda: nn.SiLU(inplace=True),
    "gelu": nn.GELU,
}
# Where a residual network puts the block (Fig. 5, Tables 14 and 15).
POSITIONS = ("standard", "pre", "post", "identity", "3x3")
FC_TYPES = ("conv", "linear")


def se_width(channels: int, reduction: float = 16, divisor: int = 1) -> int:
    """Width of the excitation bottleneck, C/r of Eq. 3 (paper §3.2, Table 10).

    The single rounding rule of the project: ``C / r`` is rounded half-up to the nearest
    multiple of ``divisor`` and never below ``divisor``. With ``divisor=1`` (default) this is
    the paper's C/r, and equals the authors' released widths (all of which divide exactly).
    ``divisor=8`` reproduces timm's ``seresnet18/34`` widths (C=64, r=16 gives 8, not 4).
    An ``r`` larger than ``C`` (C/r < 1) is refused rather than silently rounded up.
    """
    if channels < 1:
        raise UserInputError(f"channels must be a positive integer, got {channels}")
    if not reduction > 0:
        raise UserInputError(f"reduction must be positive, got {reduction}")
    if divisor < 1:
        raise UserInputError(f"divisor must be a positive integer, got {divisor}")
    raw = channels / reduction
    if raw < 1:
        raise UserInputError(
            f"reduction={reduction} leaves fewer than 1 channel for an SE block on {channels} channels "
            f"(C/r = {raw:.3g}); use reduction <= {channels} or pass an explicit width"
        )
    return max(divisor, int(raw / divisor + 0.5) * divisor)


def check_se_input(x: torch.Tensor, channels: int) -> None:
    """An (N, channels, H, W) input, or a UserInputError (a ValueError) naming the shape. A ``torch.fx`` leaf (wrapped
    below), so a traced graph runs the check instead of branching on a shape."""
    if x.ndim != 4 or x.shape[1] != channels:
        raise UserInputError(f"SqueezeExcite expects an (N, {channels}, H, W) tensor, got shape {tuple(x.shape)}")


torch.fx.wrap("check_se_input")


class SqueezeExcite(nn.Module):
    """Squeeze-and-Excitation block, Eq. 2-4: ``x * gate(fc2(act(fc1(squeeze(x)))))``.

    Args:
        channels: C, the number of input (and output) channels.
        reduction: r, the reduction ratio of Eq. 3 (Table 10). Ignored if ``width`` is given.
        width: explicit bottleneck width instead of ``se_width(channels, reduction, divisor)``.
        divisor: rounding multiple for the bottleneck width (see :func:`se_width`).
        squeeze: ``"avg"`` (global average pooling, Eq. 2), ``"max"`` (Table 11) or
            ``"none"`` (NoSqueeze, Table 16: the FCs become 1x1 convs applied at every position).
        act: the non-linearity between the FCs (ReLU in the paper).
        gate: ``"sigmoid"`` (Eq. 3), ``"tanh"``, ``"relu"`` (Table 12) or ``"hard_sigmoid"``.
        bias: FC biases on (the authors' Caffe models) or off (the paper's §6 ablations).
        fc: ``"conv"`` (1x1 convolutions, the layout of the released/timm weights) or
            ``"linear"`` (``nn.Linear``); both compute the same function for the same weights.
        fused: ``True`` runs the squeeze and the scaling as Triton kernels where they apply
            (:mod:`senet.layers.fused_se`); ``None`` or ``False``, the default, the PyTorch ops.
    """

    def __init__(
        self,
        channels: int,
        reduction: float = 16,
        *,
        width: int | None = None,
        divisor: int = 1,
        squeeze: str = "avg",
        act: str = "relu",
        gate: str = "sigmoid",
        bias: bool = True,
        fc: str = "conv",
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        if fused not in (None, True, False):
            raise UserTypeError(f"fused must be True, False or None, got {fused!r}")
        check_choice("squeeze", squeeze, tuple(SQUEEZES))
        check_choice("act", act, tuple(ACTIVATIONS))
        check_choice("gate", gate, tuple(GATES))
        check_choice("fc", fc, FC_TYPES)
        if width is None:
            width = se_width(channels, reduction, divisor)
        elif width < 1:
            raise UserInputError(f"width must be >= 1, got {width}")
        self.channels = channels
        self.width = width
        self.fc_type = fc
        self.squeeze_kind = squeeze
        # Fused Triton kernels (layers.fused_se), opt-in until they have run on a GPU; a plain
        # attribute, not a buffer, so state_dict keys do not change. Flip with set_fused().
        self.fused: bool | None = fused
        self.squeeze = SQUEEZES[squeeze]()
        if fc == "conv":
            self.fc1: nn.Module = nn.Conv2d(channels, width, 1, bias=bias)
            self.fc2: nn.Module = nn.Conv2d(width, channels, 1, bias=bias)
        else:
            self.fc1 = nn.Linear(channels, width, bias=bias)
            self.fc2 = nn.Linear(width, channels, bias=bias)
        self.act = ACTIVATIONS[act]()
        self.gate = GATES[gate]()

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """The excitation s of Eq. 3: shape (N, C, 1, 1), or (N, C, H, W) for NoSqueeze."""
        check_se_input(x, self.channels)
        if self.squeeze_kind == "avg" and self._fused(x):
            z = fused_se.squeeze_mean(x)  # one Triton reduction instead of AdaptiveAvgPool2d
        else:
            z = self.squeeze(x)
        if self.fc_type == "linear":  # Linear acts on the last dim: move channels there and back
            # Positive dims (x is 4-d): ONNX export writes movedim(-1, 1) as an invalid negative Transpose perm.
            z = self.fc2(self.act(self.fc1(z.movedim(1, 3)))).movedim(3, 1)
        elif not torch.fx._symbolic_trace.is_fx_symbolic_tracing() and z.shape[2] == 1 and z.shape[3] == 1 \
                and self._bare_convs():  # a traced graph keeps the general form, for any map size
            # A 1x1 convolution of a 1x1 map is a matrix product. Done as one, with the same weights,
            # it skips the convolution machinery: 4-8x faster for these sizes on CPU, about a third
            # of SE-ResNet-50's extra inference time there (docs/results.md).
            h = self.act(F.linear(z.flatten(1), self.fc1.weight.flatten(1), self.fc1.bias))
            z = F.linear(h, self.fc2.weight.flatten(1), self.fc2.bias)[:, :, None, None]
        else:
            z = self.fc2(self.act(self.fc1(z)))
        return self.gate(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 4: rescale each channel of ``x`` by its excitation."""
        s = self.scale(x)
        if self.squeeze_kind != "none" and self._fused(x):
            return fused_se.se_apply(x, s)
        return x * s

    def _bare_convs(self) -> bool:
        """Both FCs are plain 1x1 ``nn.Conv2d`` without hooks, so a matrix product computes them exactly."""
        return all(type(fc) is nn.Conv2d and fc.kernel_size == (1, 1) and fc.groups == 1
                   and fc.padding == (0, 0)
                   and not (fc._forward_hooks or fc._forward_pre_hooks) for fc in (self.fc1, self.fc2))

    def _fused(self, x: torch.Tensor) -> bool:
        return fused_se.use_fused(self.fused, x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, width={self.width}, fc={self.fc_type!r}"


@dataclasses.dataclass(frozen=True)
class SEConfig:
    """Every SE option the paper studies, for a network to build its blocks from.

    The first group configures each :class:`SqueezeExcite`; ``position`` and ``stages`` say
    where a residual network puts them (Fig. 5 / Table 14-15, and Table 13 / §4).

    ``stages`` holds 1-based stage indices (stage 1 is the paper's conv2_x of Table 1);
    ``None`` means every stage. ``(1, 2, 3)`` on a 4-stage ResNet is "all but the last" (§4).
    """

    reduction: float = 16
    width: int | None = None
    divisor: int = 1
    squeeze: str = "avg"
    act: str = "relu"
    gate: str = "sigmoid"
    bias: bool = True
    fc: str = "conv"
    position: str = "standard"
    stages: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        check_choice("se.squeeze", self.squeeze, tuple(SQUEEZES))
        check_choice("se.act", self.act, tuple(ACTIVATIONS))
        check_choice("se.gate", self.gate, tuple(GATES))
        check_choice("se.fc", self.fc, FC_TYPES)
        check_choice("se.position", self.position, POSITIONS)
        if not (isinstance(self.reduction, (int, float)) and self.reduction > 0):
            raise UserInputError(f"se.reduction must be a positive number, got {self.reduction!r}")
        if self.stages is not None:
            stages = tuple(self.stages)
            if not all(isinstance(s, int) and s >= 1 for s in stages):
                raise UserInputError(f"se.stages must be 1-based stage indices, got {self.stages!r}")
            object.__setattr__(self, "stages", stages)

    def applies_to(self, stage: int, num_stages: int) -> bool:
        """Whether stage ``stage`` (1-based) of ``num_stages`` carries SE blocks."""
        if self.stages is None:
            return True
        bad = [s for s in self.stages if s > num_stages]
        if bad:
            raise UserInputError(f"se.stages={self.stages} names stage(s) {bad} but the network has {num_stages}")
        return stage in self.stages

    def make(self, channels: int) -> SqueezeExcite:
        """Build one SE block on ``channels`` channels with these options."""
        return SqueezeExcite(
            channels,
            self.reduction,
            width=self.width,
            divisor=self.divisor,
            squeeze=self.squeeze,
            act=self.act,
            gate=self.gate,
            bias=self.bias,
            fc=self.fc,
        )

    def replace(self, **changes: object) -> "SEConfig":
        """A copy with some fields changed; unknown field names fail naming the allowed ones."""
        fields = [f.name for f in dataclasses.fields(self)]
        for key in changes:
            check_choice("SE option", key, fields)
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def make_se(se: SEConfig | None, channels: int) -> nn.Module:
    """The attention slot of a block: an SE block, or ``nn.Identity`` for the plain baseline."""
    return nn.Identity() if se is None else se.make(channels)
