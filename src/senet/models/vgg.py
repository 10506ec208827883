"""Plain convolutional stacks: VGG-16 with and without BN (Simonyan & Zisserman 2015; paper
Table 2 "VGG-16 (BN)") and the 10-layer CIFAR network of the transfer-learning seed study.

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
from torch import nn
from torch.nn import functional as F

from ..layers.se import SEConfig, check_choice
from .common import ActSE, check_common, check_input, he_init, stage_ends

__all__ = ["VGG", "VGG16", "CIFAR10_LAYER"]

Layer = Union[int, str]
# Configuration "D" of Simonyan & Zisserman: 13 convs; "M" is a 2x2 max-pool.
VGG16: tuple[Layer, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
# Seed 003's CIFAR network: 3 conv-BN-ReLU at 64, avg-pool, 3 at 128, avg-pool, 3 at 256 ("A": 2x2 avg-pool).
CIFAR10_LAYER: tuple[Layer, ...] = (64, 64, 64, "A", 128, 128, 128, "A", 256, 256, 256)
HEADS = ("mlp", "gap")


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
        h, w = x.shape[-2:]
        if h < self.kernel or w < self.kernel:
            x = F.adaptive_avg_pool2d(x, (max(h, self.kernel), max(w, self.kernel)))
        return self.act2(self.fc2(self.drop(self.act1(self.fc1(x)))))


class Classifier(nn.Module):
    """Global average pooling, dropout and the final linear layer (``head.fc``)."""

    def __init__(self, cin: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.global_pool(x).flatten(1)))


class VGG(nn.Module):
    """A VGG-style stack of 3x3 conv(-BN)-ReLU units with SE after each non-linearity.

    Args:
        layers: conv widths, with ``"M"`` (2x2 max-pool) and ``"A"`` (2x2 average pool) between.
        num_classes, in_chans: classifier outputs and input channels.
        norm: BN after each convolution (VGG-16-BN, the paper's Table 2 baseline).
        conv_bias: biases on the convolutions (VGG and Keras do; off is usual before BN).
        head: ``"mlp"`` (VGG's fc6/fc7 with 4096 units, then the classifier) or ``"gap"``
            (global average pooling straight into the classifier, seed 003's CIFAR/transfer head).
        mlp_width: units of fc6/fc7. drop_rate: dropout in the head (timm: 0; VGG: 0.5).
        eps: BN epsilon.
        se: SE options, or ``None`` for the plain network.
    """

    min_input_size = 32

    def __init__(self, layers: Sequence[Layer] = VGG16, *, num_classes: int = 1000, in_chans: int = 3,
                 norm: bool = False, conv_bias: bool = True, head: str = "mlp", mlp_width: int = 4096,
                 drop_rate: float = 0.0, eps: float = 1e-5, se: SEConfig | None = None) -> None:
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
                raise ValueError(f"layers must hold positive conv widths or 'M'/'A', got {item!r}")
            units.append(nn.Conv2d(cin, item, 3, padding=1, bias=conv_bias))
            if norm:
                units.append(nn.BatchNorm2d(item, eps=eps))
            units.append(ActSE(nn.ReLU(inplace=True), se, item))
            cin = item
        if not any(isinstance(u, nn.Conv2d) for u in units):
            raise ValueError(f"layers={tuple(layers)} holds no convolution")
        self.features = nn.Sequential(*units)
        widths = [0] * len(units)  # output channels after each unit
        for i, u in enumerate(units):
            widths[i] = u.out_channels if isinstance(u, nn.Conv2d) else (widths[i - 1] if i else in_chans)
        self.feature_info = stage_ends([(f"features.{i}", widths[i], 2 if isinstance(u, (nn.MaxPool2d, nn.AvgPool2d))
                                         else 1) for i, u in enumerate(units)])
        if head == "mlp":
            self.pre_logits: nn.Module = ConvMlp(cin, mlp_width, drop_rate)
            cin = mlp_width
        else:
            self.pre_logits = nn.Identity()
        self.num_features = cin
        self.num_classes = num_classes
        self.head = Classifier(cin, num_classes, drop_rate)
        he_init(self)

    classifier_name = "head.fc"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional stage's map (timm's VGG: fc6/fc7 belong to the head)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """fc6/fc7 (as convolutions), global pooling, dropout and the classifier;
        ``pre_logits=True`` returns the pooled ``num_features``-wide vector before it."""
        x = self.pre_logits(x)
        if not pre_logits:
            return self.head(x)  # called as a module, so cost counting attributes it to the head
        return self.head.drop(self.head.global_pool(x).flatten(1))

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh classifier for ``num_classes`` outputs; 0 removes it (forward gives pooled features)."""
        if not isinstance(num_classes, int) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0, got {num_classes!r}")
        self.num_classes = num_classes
        self.head.fc = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(self, x)
        return self.forward_head(self.forward_features(x))
