"""Small building blocks shared by the families: conv-BN-ReLU units, an activation followed by
an SE slot, the input and argument checks, ``feature_info`` entries, and the one weight
initialisation of the package (He init of the paper, §5.1, leaving SE blocks at PyTorch's defaults).
"""

from __future__ import annotations

import torch
import torch.fx
from torch import nn

from ..errors import UserInputError
from ..layers.se import SEConfig, SqueezeExcite, make_se
from .features import FeatureInfo

__all__ = ["ConvBnAct", "ActSE", "BatchNormReLU", "DropPath", "drop_path", "make_drop_path", "drop_path_rates",
           "feature", "stage_ends", "he_init", "check_common", "check_input"]


class ConvBnAct(nn.Module):
    """conv -> BN -> ReLU with submodules ``conv`` and ``bn`` (the key names of timm's Inception
    ``BasicConv2d``, so its weights load). ``bias`` is for the Caffe models, whose convolutions
    carry a bias in front of the BN."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0, *, eps: float = 1e-5, bias: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=bias)
        self.bn = nn.BatchNorm2d(cout, eps=eps)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ActSE(nn.Module):
    """An activation followed by the SE slot (``nn.Identity`` in the plain network).

    Neither part has weights of its own besides SE's, so a plain network built with this module
    has exactly the state-dict keys of one built with a bare activation (timm's VGG), and the
    SE network differs from it only by the added ``se.*`` keys.
    """

    def __init__(self, act: nn.Module, se: SEConfig | None, channels: int) -> None:
        super().__init__()
        self.act = act
        self.se = make_se(se, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.act(x))


class BatchNormReLU(nn.BatchNorm2d):
    """BN followed by ReLU in one module whose keys are a plain BN's (timm's ``BatchNormAct2d``
    as used by its DenseNet: ``norm1.weight``, not ``norm1.bn.weight``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(super().forward(x))

    def _check_input_dim(self, input: torch.Tensor) -> None:
        # Fed by a convolution, so always 4-d; BatchNorm2d's own test would make a torch.fx
        # trace branch on the input's rank (this class is not a torch.nn leaf).
        pass


def he_init(model: nn.Module) -> None:
    """He (MSRA) init of every convolution (paper §5.1), unit/zero BN, and a small normal init of
    linear classifiers. SE FCs keep PyTorch's default init: fan-out He init of a 1x1 conv
    feeding the gate would start most sigmoids saturated."""
    se_parts = {id(m) for se in model.modules() if isinstance(se, SqueezeExcite) for m in se.modules()}
    for m in model.modules():
        if id(m) in se_parts:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def check_common(num_classes: int, in_chans: int, drop_rate: float, *, drop_path_rate: float = 0.0) -> None:
    """The checks every builder applies to its shared arguments, with messages naming them."""
    if num_classes < 1:
        raise UserInputError(f"num_classes must be >= 1, got {num_classes}")
    if in_chans < 1:
        raise UserInputError(f"in_chans must be >= 1, got {in_chans}")
    if not 0.0 <= drop_rate < 1.0:
        raise UserInputError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if not 0.0 <= drop_path_rate < 1.0:
        raise UserInputError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")


def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Stochastic-depth probability of each of ``num_blocks`` residual blocks, in network order:
    timm's linear rule, ``rate * i / (num_blocks - 1)`` for block ``i`` (Huang et al. 2016, §3's
    linear decay), so the first block is never dropped and the last is dropped with ``rate``."""
    return [rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): in training, zero the whole residual branch of each
    sample with probability ``p`` and scale the kept ones by ``1 / (1 - p)``; else ``x``.

    A leaf of ``torch.fx`` tracing (wrapped below): the mask's shape comes from the real input."""
    if not training or p == 0.0:
        return x
    keep = 1.0 - p
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
    return x * mask.div_(keep)


torch.fx.wrap("drop_path")


class DropPath(nn.Module):
    """:func:`drop_path` as a module: a residual branch dropped per sample with probability
    ``p`` in training mode; the identity in eval mode. No weights, so no state_dict keys."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise UserInputError(f"drop path probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p:.4g}"


def make_drop_path(p: float) -> DropPath | None:
    """A :class:`DropPath` for ``p > 0``, else ``None``: a block built with 0 runs exactly the
    network without stochastic depth (no extra op, same keys)."""
    return DropPath(p) if p > 0 else None


def check_input(x: torch.Tensor, in_chans: int, min_side: int, model: str) -> None:
    """Fail with the expected and the given shape, instead of an error deep inside a conv, when
    ``x`` is not an (N, in_chans, H, W) batch at least ``min_side`` pixels on a side.

    A leaf of ``torch.fx`` tracing (``torch.fx.wrap`` in :mod:`.base`): the traced graph calls it
    with the real input, so the check still runs in a traced module, without the trace branching
    on a shape."""
    if x.ndim != 4 or x.shape[1] != in_chans:
        raise UserInputError(f"{model} expects an (N, {in_chans}, H, W) input, got shape {tuple(x.shape)}"
                         + (f"; build it with in_chans={x.shape[1]} for {x.shape[1]}-channel images"
                            if x.ndim == 4 else ""))
    if min(x.shape[-2:]) < min_side:
        raise UserInputError(f"{model} needs inputs of at least {min_side}x{min_side} pixels, got {tuple(x.shape)}")


def feature(num_chs: int, reduction: int, module: str) -> dict:
    """One ``feature_info`` entry (timm's keys): a stage output's channels, stride and module."""
    return {"num_chs": num_chs, "reduction": reduction, "module": module}


def stage_ends(steps: list[tuple[str, int, int]]) -> FeatureInfo:
    """``feature_info`` from a network's top-level steps ``(module, out channels, stride)``: the
    last module at each stride level (timm's choice: each stage's output before it is reduced)."""
    info, reduction = FeatureInfo(), 1
    for i, (name, chs, stride) in enumerate(steps):
        reduction *= stride
        if i + 1 == len(steps) or steps[i + 1][2] > 1:
            info.append(feature(chs, reduction, name))
    return info
