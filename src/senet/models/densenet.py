"""DenseNet-121/169/201 (Huang et al. 2017, DenseNet-BC: growth rate k = 32, 1x1 bottlenecks of
4k channels, compression 0.5 in the transitions) with optional SE blocks.

Where SE sits (``placement``):

* ``"layer"`` (default): on the k new feature maps of each dense layer, after its 3x3 conv and
  before they are concatenated to the block's state. A dense layer is a non-identity branch and
  concatenation is how DenseNet aggregates it with the identity (all earlier maps), so this is the
  paper's rule for residual networks (§3.3, Fig. 3: SE on the branch, before the aggregation)
  carried over: the earlier maps pass through untouched, as the identity does in SE-ResNet, and
  every feature map is recalibrated exactly once, when it is produced.
* ``"block"``: on each dense block's concatenated output, before the transition (or the final
  norm): the rule for modules without an identity path (Fig. 2, SE-Inception: SE on the
  module's output). Fewer, wider SE blocks (4 instead of 58 for DenseNet-121).

Module names are timm's / torchvision's ``densenet121`` (``features.conv0``, ``norm0``,
``denseblock<i>.denselayer<j>.norm1/conv1/norm2/conv2``, ``transition<i>.norm/conv``, ``norm5``,
``classifier``); timm weights load into the plain networks.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import UserInputError
from ..layers.se import SEConfig, make_se
from ..validation import check_choice
from .base import ModelBase
from .common import BatchNormReLU, check_common, stage_ends

__all__ = ["DenseNet", "DEPTHS", "PLACEMENTS"]

DEPTHS = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32)}
PLACEMENTS = ("layer", "block")


class DenseLayer(nn.Module):
    """BN-ReLU-conv1x1 (4k) -BN-ReLU-conv3x3 (k); returns the k new maps, recalibrated by SE."""

    def __init__(self, cin: int, growth: int, bn_size: int, se: SEConfig | None) -> None:
        super().__init__()
        self.norm1 = BatchNormReLU(cin)
        self.conv1 = nn.Conv2d(cin, bn_size * growth, 1, bias=False)
        self.norm2 = BatchNormReLU(bn_size * growth)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)
        self.se = make_se(se, growth)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.conv2(self.norm2(self.conv1(self.norm1(x)))))


class DenseBlock(nn.Module):
    """``n`` dense layers, each seeing the concatenation of the input and all earlier outputs."""

    def __init__(self, n: int, cin: int, growth: int, bn_size: int, layer_se: SEConfig | None,
                 block_se: SEConfig | None) -> None:
        super().__init__()
        for i in range(n):
            self.add_module(f"denselayer{i + 1}", DenseLayer(cin + i * growth, growth, bn_size, layer_se))
        self.num_layers = n
        self.out_channels = cin + n * growth
        self.se = make_se(block_se, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for i in range(self.num_layers):  # looked up by name, so a retrofitted layer is used
            features.append(getattr(self, f"denselayer{i + 1}")(torch.cat(features, 1)))
        return self.se(torch.cat(features, 1))


class Transition(nn.Sequential):
    """BN-ReLU, 1x1 conv to ``cout`` (compression), 2x2 average pooling."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.norm = BatchNormReLU(cin)
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.pool = nn.AvgPool2d(2, stride=2)


class DenseNet(ModelBase):
    """DenseNet-BC for ImageNet-size input.

    Args:
        layers: dense layers per block, e.g. ``(6, 12, 24, 16)`` for DenseNet-121.
        num_classes, in_chans, drop_rate: classifier outputs, input channels, dropout before it.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        growth: growth rate k. stem_width: channels of the 7x7 stem conv (2k).
        bn_size: bottleneck width as a multiple of k. compression: transition channel factor.
        se: SE options, or ``None`` for the plain network.
        placement: ``"layer"`` or ``"block"`` (see the module docstring).
    """

    min_input_size = 32
    classifier_name = "classifier"

    def __init__(self, layers: Sequence[int] = DEPTHS[121], *, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg", growth: int = 32, stem_width: int = 64,
                 bn_size: int = 4,
                 compression: float = 0.5, se: SEConfig | None = None, placement: str = "layer") -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        self.in_chans = in_chans
        check_choice("placement", placement, PLACEMENTS)
        if not layers or not all(n >= 1 for n in layers):
            raise UserInputError(f"layers={tuple(layers)} must give >= 1 dense layer per block")
        if not 0.0 < compression <= 1.0:
            raise UserInputError(f"compression must be in (0, 1], got {compression}")
        layer_se = se if placement == "layer" else None
        block_se = se if placement == "block" else None
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(in_chans, stem_width, 7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", BatchNormReLU(stem_width))
        self.features.add_module("pool0", nn.MaxPool2d(3, stride=2, padding=1))
        c = stem_width
        steps = [("features.norm0", stem_width, 2), ("features.pool0", stem_width, 2)]
        for i, n in enumerate(layers):
            block = DenseBlock(n, c, growth, bn_size, layer_se, block_se)
            self.features.add_module(f"denseblock{i + 1}", block)
            c = block.out_channels
            steps.append((f"features.denseblock{i + 1}", c, 2 if i else 1))
            if i < len(layers) - 1:
                cout = int(c * compression)
                self.features.add_module(f"transition{i + 1}", Transition(c, cout))
                c = cout
        self.features.add_module(f"norm{len(layers) + 1}", BatchNormReLU(c))
        steps.append((f"features.norm{len(layers) + 1}", c, 1))
        names = [f"features.{n}" for n, _ in self.features.named_children()]
        self.init_layout(names[:3], names[3:], stage_ends(steps))
        self.init_head(c, num_classes, drop_rate, global_pool=global_pool)
        self.init_weights()
