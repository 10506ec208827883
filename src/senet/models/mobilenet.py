"""MobileNetV1 1.0-224 (Howard et al. 2017) and SE-MobileNet (paper Table 3).

Where SE sits: on the output of each depthwise-separable block, after the pointwise
convolution's BN and non-linearity. That is the block's output (Fig. 2's principle for units
without a residual branch), and it is the placement that gives the paper's 4.2M -> 4.7M
parameters with r = 16: SE after the depthwise convolutions instead (as in MobileNetV3) would
add only 0.35M (4.6M). The stem convolution has no SE block unless ``stem_se=True``.

Module names are timm's ``mobilenetv1_100`` (``conv_stem``, ``bn1``, ``blocks.<stage>.<i>.conv_dw /
bn1 / conv_pw / bn2``, ``classifier``), whose weights load into the plain network.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserInputError
from ..layers.se import SEConfig, make_se
from ..validation import check_choice
from .base import ModelBase
from .common import check_common, stage_ends

__all__ = ["MobileNetV1", "STAGES"]

# (output channels, blocks, stride of the first block) per stage; Howard et al. Table 1.
STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 6, 2), (1024, 2, 2))
ACTS = {"relu6": nn.ReLU6, "relu": nn.ReLU}


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv-BN-act, 1x1 pointwise conv-BN-act, then the SE slot."""

    def __init__(self, cin: int, cout: int, stride: int, se: SEConfig | None, act: str, eps: float) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride=stride, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin, eps=eps)
        self.act1 = ACTS[act](inplace=True)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=eps)
        self.act2 = ACTS[act](inplace=True)
        self.se = make_se(se, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act1(self.bn1(self.conv_dw(x)))
        return self.se(self.act2(self.bn2(self.conv_pw(x))))


class MobileNetV1(ModelBase):
    """MobileNetV1 (width 1.0): a 3x3 stride-2 stem and 13 depthwise-separable blocks.

    Args:
        num_classes, in_chans, drop_rate: classifier outputs, input channels, dropout before it.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        act: ``"relu6"`` (the TensorFlow/timm/Keras models) or ``"relu"`` (the MobileNet paper).
        eps: BN epsilon (timm: 1e-5; Keras: 1e-3).
        se: SE options, or ``None`` for the plain network.
        stem_se: also put an SE block after the stem's activation.
    """

    min_input_size = 32
    classifier_name = "classifier"

    def __init__(self, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", act: str = "relu6", eps: float = 1e-5, se: SEConfig | None = None, stem_se: bool = False) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        self.in_chans = in_chans
        check_choice("act", act, tuple(ACTS))
        if stem_se and se is None:
            raise UserInputError("stem_se=True needs SE options (se=SEConfig(...))")
        stem = 32
        self.conv_stem = nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=eps)
        self.act1 = ACTS[act](inplace=True)
        self.stem_se = make_se(se if stem_se else None, stem)
        stages = []
        cin = stem
        for cout, n, stride in STAGES:
            blocks = []
            for i in range(n):
                blocks.append(DepthwiseSeparable(cin, cout, stride if i == 0 else 1, se, act, eps))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.init_layout(["conv_stem", "bn1", "act1", "stem_se"], [f"blocks.{i}" for i in range(len(STAGES))],
                         stage_ends([("stem_se", stem, 2)] + [
                             (f"blocks.{i}", cout, stride) for i, (cout, _, stride) in enumerate(STAGES)]))
        self.init_head(cin, num_classes, drop_rate, global_pool=global_pool)
        self.init_weights()
