"""Inception-ResNet-v2 (Szegedy et al. 2017) and SE-Inception-ResNet-v2 (paper Table 2).

SE sits on the residual branch of each Inception-ResNet block (35x35 ``Block35`` x10, 17x17
``Block17`` x20, 8x8 ``Block8`` x10): after the 1x1 projection that closes the branch, before
it is scaled and added to the identity (§3.3, Fig. 3: SE on the non-identity branch before
summation). The three concatenating modules (``mixed_5b``, ``mixed_6a``, ``mixed_7a``) have no
identity path and carry no SE, so SE-IRv2 has exactly one SE block per residual block.

Module names are timm's ``inception_resnet_v2`` (``conv2d_1a.conv``, ``repeat.<i>.branch1.0.conv``,
``repeat_1``, ``repeat_2``, ``block8``, ``conv2d_7b``, ``classif``), so timm weights load.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..layers.se import SEConfig, make_se
from .base import ModelBase
from .common import ConvBnAct, check_common, drop_path_rates, make_drop_path, stage_ends

__all__ = ["InceptionResNetV2"]

EPS = 1e-3  # the TensorFlow-trained weights' BN epsilon
STEM = ["conv2d_1a", "conv2d_2a", "conv2d_2b", "maxpool_3a", "conv2d_3b", "conv2d_4a", "maxpool_5a"]
STAGES = ["mixed_5b", "repeat", "mixed_6a", "repeat_1", "mixed_7a", "repeat_2", "block8", "conv2d_7b"]


def cba(cin: int, cout: int, kernel: int | tuple[int, int] = 1, stride: int = 1,
        padding: int | tuple[int, int] = 0) -> ConvBnAct:
    return ConvBnAct(cin, cout, kernel, stride, padding, eps=EPS)


class Concat(nn.Module):
    """Branches ``branch0``, ``branch1``, ... applied to the same input and concatenated."""

    def __init__(self, branches: Sequence[nn.Module]) -> None:
        super().__init__()
        for i, b in enumerate(branches):
            self.add_module(f"branch{i}", b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.children()], 1)


class ResidualInception(nn.Module):
    """``act(x + scale * se(conv2d(concat(branches(x)))))``: one Inception-ResNet block;
    ``drop_path`` is the stochastic-depth probability of its scaled residual branch."""

    def __init__(self, channels: int, branches: Sequence[nn.Module], branch_out: int, scale: float,
                 se: SEConfig | None, act: bool = True, drop_path: float = 0.0) -> None:
        super().__init__()
        self.drop_path = make_drop_path(drop_path)  # None at 0: exactly the block without it
        for i, b in enumerate(branches):
            self.add_module(f"branch{i}", b)
        self.num_branches = len(branches)
        self.conv2d = nn.Conv2d(branch_out, channels, 1, bias=True)
        self.se = make_se(se, channels)
        self.scale = scale
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.num_branches)], 1)
        out = self.se(self.conv2d(out)) * self.scale
        if self.drop_path is not None:
            out = self.drop_path(out)
        return self.act(out + x)


def block35(se: SEConfig | None, drop_path: float = 0.0) -> ResidualInception:
    return ResidualInception(320, [
        cba(320, 32),
        nn.Sequential(cba(320, 32), cba(32, 32, 3, 1, 1)),
        nn.Sequential(cba(320, 32), cba(32, 48, 3, 1, 1), cba(48, 64, 3, 1, 1)),
    ], 128, 0.17, se, drop_path=drop_path)


def block17(se: SEConfig | None, drop_path: float = 0.0) -> ResidualInception:
    return ResidualInception(1088, [
        cba(1088, 192),
        nn.Sequential(cba(1088, 128), cba(128, 160, (1, 7), 1, (0, 3)), cba(160, 192, (7, 1), 1, (3, 0))),
    ], 384, 0.10, se, drop_path=drop_path)


def block8(se: SEConfig | None, scale: float = 0.20, act: bool = True, drop_path: float = 0.0) -> ResidualInception:
    return ResidualInception(2080, [
        cba(2080, 192),
        nn.Sequential(cba(2080, 192), cba(192, 224, (1, 3), 1, (0, 1)), cba(224, 256, (3, 1), 1, (1, 0))),
    ], 448, scale, se, act, drop_path)


class InceptionResNetV2(ModelBase):
    """Inception-ResNet-v2 for 299x299 input (needs at least 75x75).

    Args:
        num_classes, in_chans, drop_rate: classifier outputs, input channels, dropout before it.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        drop_path_rate: stochastic depth of the 40 residual blocks, timm's linear rule
            (``drop_path_rates``: block ``i`` drops with ``drop_path_rate * i / 39``); 0: none.
        se: SE options, or ``None`` for the plain network.
    """

    min_input_size = 75
    classifier_name = "classif"

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", drop_path_rate: float = 0.0, se: SEConfig | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate, drop_path_rate=drop_path_rate)
        dpr = iter(drop_path_rates(drop_path_rate, 10 + 20 + 9 + 1))
        self.in_chans = in_chans
        self.conv2d_1a = cba(in_chans, 32, 3, 2)
        self.conv2d_2a = cba(32, 32, 3)
        self.conv2d_2b = cba(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = cba(64, 80)
        self.conv2d_4a = cba(80, 192, 3)
        self.maxpool_5a = nn.MaxPool2d(3, stride=2)
        self.mixed_5b = Concat([
            cba(192, 96),
            nn.Sequential(cba(192, 48), cba(48, 64, 5, 1, 2)),
            nn.Sequential(cba(192, 64), cba(64, 96, 3, 1, 1), cba(96, 96, 3, 1, 1)),
            nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False), cba(192, 64)),
        ])
        self.repeat = nn.Sequential(*[block35(se, next(dpr)) for _ in range(10)])
        self.mixed_6a = Concat([
            cba(320, 384, 3, 2),
            nn.Sequential(cba(320, 256), cba(256, 256, 3, 1, 1), cba(256, 384, 3, 2)),
            nn.MaxPool2d(3, stride=2),
        ])
        self.repeat_1 = nn.Sequential(*[block17(se, next(dpr)) for _ in range(20)])
        self.mixed_7a = Concat([
            nn.Sequential(cba(1088, 256), cba(256, 384, 3, 2)),
            nn.Sequential(cba(1088, 256), cba(256, 288, 3, 2)),
            nn.Sequential(cba(1088, 256), cba(256, 288, 3, 1, 1), cba(288, 320, 3, 2)),
            nn.MaxPool2d(3, stride=2),
        ])
        self.repeat_2 = nn.Sequential(*[block8(se, drop_path=next(dpr)) for _ in range(9)])
        self.block8 = block8(se, scale=1.0, act=False, drop_path=next(dpr))  # the last block: unscaled, no ReLU
        self.conv2d_7b = cba(2080, 1536)
        self.init_layout(STEM, STAGES, stage_ends([
            ("conv2d_1a", 32, 2), ("conv2d_2b", 64, 1), ("maxpool_3a", 64, 2), ("conv2d_4a", 192, 1),
            ("maxpool_5a", 192, 2), ("repeat", 320, 1), ("mixed_6a", 1088, 2), ("repeat_1", 1088, 1),
            ("mixed_7a", 2080, 2), ("conv2d_7b", 1536, 1)]))
        self.init_head(1536, num_classes, drop_rate, global_pool=global_pool)
        self.init_weights()
