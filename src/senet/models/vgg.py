"""Plain convolutional stacks: VGG-16 with and without BN (Simonyan & Zisserman 2015; paper
Table 2 "VGG-16 (BN)") and a 10-layer CIFAR network (nine conv-BN-ReLU units, used for transfer).

SE sits after the non-linearity of each convolution (paper §5.1, "SE-VGG-16": VGG has no
residual branch, so every conv-BN-ReLU unit is recalibrated, Fig. 2's principle of SE on a
unit's output). One class, :class:`VGG`; depth, BN, pooling and head are arguments.

The module names are timm's ``vgg16`` / ``vgg16_bn`` (``features.<i>``, ``pre_logits.fc1/fc2``
as 7x7 and 1x1 convolutions, ``head.fc``), so timm weights load into the plain networks. The
activation slot of each unit is an :class:`~senet.models.common.ActSE` (ReLU, then SE or
identity): it has no weights of its own, so the conv/BN indices of ``features`` are the same
with and without SE.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError
from ..layers.se import SEConfig
from ..validation import check_choice
from .base import ModelBase
from .common import ActSE, check_common, stage_ends

__all__ = ["VGG", "VGG16", "CIFAR10_LAYER"]

Layer = Union[int, str]
# Configuration "D" of Simonyan & Zisserman: 13 convs; "M" is a 2x2 max-pool.
VGG16: tuple[Layer, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# The 10-layer CIFAR network: 3 conv-BN-ReLU at 64, avg-pool, 3 at 128, avg-pool, 3 at 256 ("A": 2x2 avg-pool).
CIFAR10_LAYER: tuple[Layer, ...] = (64, 64, 64, "A", 128, 128, 128, "A", 256, 256, 256)
HEADS = ("mlp", "gap")


def pool_up_to(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``x`` average-pooled up to ``kernel`` pixels on each side where it is smaller (else ``x``).

    A leaf of ``torch.fx`` tracing (``torch.fx.wrap`` below): the size test runs on the real input
    when the traced graph runs, instead of the trace branching on a shape."""
    h, w = x.shape[-2:]
    if h < kernel or w < kernel:
        return F.adaptive_avg_pool2d(x, (max(h, kernel), max(w, kernel)))
    return x


torch.fx.wrap("pool_up_to")


class ConvMlp(nn.Module):
    """VGG's fully connected layers fc6/fc7 as a 7x7 and a 1x1 convolution (timm's layout).

    Inputs smaller than 7x7 are first average-pooled up to 7x7, so the network runs on any size.
    """

    def __init__(self, cin: int, width: int, drop_rate: float, kernel: int = 7) -> None:
        super().__init__()
        self.kernel = kernel
        self.fc1 = nn.Conv2d(cin, width, kernel, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(drop_rate)
        self.fc2 = nn.Conv2d(width, width, 1, bias=True)
        self.act2 = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pool_up_to(x, self.kernel)
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class VGG(ModelBase):
    """A VGG-style stack of 3x3 conv(-BN)-ReLU units with SE after each non-linearity.

    Args:
        layers: conv widths, with ``"M"`` (2x2 max-pool) and ``"A"`` (2x2 average pool) between.
        num_classes, in_chans: classifier outputs and input channels.
        norm: BN after each convolution (VGG-16-BN, the paper's Table 2 baseline).
        conv_bias: biases on the convolutions (VGG and Keras do; off is usual before BN).
        head: ``"mlp"`` (VGG's fc6/fc7 with 4096 units, then the classifier) or ``"gap"``
            (global average pooling straight into the classifier: the 10-layer CIFAR network's head).
        mlp_width: units of fc6/fc7. drop_rate: dropout in the head (timm: 0; VGG: 0.5).
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        eps: BN epsilon.
        se: SE options, or ``None`` for the plain network.
    """

    min_input_size = 32
    classifier_name = "head.fc"

    def __init__(self, layers: Sequence[Layer] = VGG16, *, num_classes: int = 1000, in_chans: int = 3,
                 norm: bool = False, conv_bias: bool = True, head: str = "mlp", mlp_width: int = 4096,
                 drop_rate: float = 0.0, global_pool: str = "avg", eps: float = 1e-5,
                 se: SEConfig | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        self.in_chans = in_chans
        check_choice("head", head, HEADS)
        pools = {"M": nn.MaxPool2d, "A": nn.AvgPool2d}
        units: list[nn.Module] = []
        cin = in_chans
        for item in layers:
            if isinstance(item, str):
                check_choice("layers item", item, tuple(pools))
                units.append(pools[item](kernel_size=2, stride=2))
                continue
            if not (isinstance(item, int) and item >= 1):
                raise UserInputError(f"layers must hold positive conv widths or 'M'/'A', got {item!r}")
            units.append(nn.Conv2d(cin, item, 3, padding=1, bias=conv_bias))
            if norm:
                units.append(nn.BatchNorm2d(item, eps=eps))
            units.append(ActSE(nn.ReLU(inplace=True), se, item))
            cin = item
        if not any(isinstance(u, nn.Conv2d) for u in units):
            raise UserInputError(f"layers={tuple(layers)} holds no convolution")
        self.features = nn.Sequential(*units)
        widths = [0] * len(units)  # output channels after each unit
        for i, u in enumerate(units):
            widths[i] = u.out_channels if isinstance(u, nn.Conv2d) else (widths[i - 1] if i else in_chans)
        info = stage_ends([(f"features.{i}", widths[i], 2 if isinstance(u, (nn.MaxPool2d, nn.AvgPool2d)) else 1)
                           for i, u in enumerate(units)])
        names = [f"features.{i}" for i in range(len(units))]
        self.init_layout(names[:1], names[1:], info)
        # timm's VGG: fc6/fc7 (as convolutions) are the head's pre-logits, before the pooling.
        mlp = ConvMlp(cin, mlp_width, drop_rate) if head == "mlp" else None
        self.init_head(cin, num_classes, drop_rate, global_pool=global_pool, pre_logits=mlp,
                       hidden_size=mlp_width if mlp else cin)
        self.init_weights()
