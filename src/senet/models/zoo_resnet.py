"""Registered residual networks for ImageNet-size input (paper Table 1-2, Appendix; Table 8).

Two layouts exist for the same architectures:

* ``resnet*``, ``se_resnet*``, ``resnext*``, ``se_resnext*``, ``senet154``: torchvision/timm
  layout (stride on the 3x3 conv, max-pool with padding). timm's SE width rounding
  (multiple of 8) is kept, which only changes ResNet-18/34's first stage (C=64: width 8).
* ``legacy_*``: the authors' Caffe models as ported by Cadene/timm ``legacy_*``: stride on the
  first 1x1 of SE-ResNet bottlenecks (which gives the paper's 3.86/3.87 GFLOPs), Caffe max-pool
  (ceil mode, no padding), width exactly C/r.
"""

from __future__ import annotations

from ..layers.se import SEConfig
from .registry import register_model
from .resnet import ResNet

DEPTHS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
TIMM_SE = SEConfig(divisor=8)  # timm: make_divisible(C / 16, 8)
PAPER_SE = SEConfig()  # C / 16 exactly, FC biases on (the released models)
LEGACY = dict(pool_ceil=True)

for depth, (block, layers) in DEPTHS.items():
    register_model(f"resnet{depth}", ResNet, family="resnet", block=block, layers=layers,
                   description=f"ResNet-{depth} (He et al. 2016), torchvision layout",
                   source="paper Table 2 baseline")
    register_model(f"se_resnet{depth}", ResNet, family="resnet", block=block, layers=layers, se=TIMM_SE,
                   description=f"SE-ResNet-{depth}, torchvision/timm layout (timm seresnet{depth})",
                   source="paper Table 2; timm seresnet")
    register_model(f"legacy_se_resnet{depth}", ResNet, family="resnet", block=block, layers=layers,
                   stride_in_1x1=block == "bottleneck", branch_act=block == "basic", se=PAPER_SE, **LEGACY,
                   description=f"SE-ResNet-{depth}, the authors' Caffe layout (timm legacy_seresnet{depth})",
                   source="paper Table 2; authors' released models")

for depth, layers in {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}.items():
    register_model(f"resnext{depth}_32x4d", ResNet, family="resnet", block="bottleneck", layers=layers,
                   groups=32, base_width=4,
                   description=f"ResNeXt-{depth} 32x4d (Xie et al. 2017), torchvision layout",
                   source="paper Table 2 baseline")
    register_model(f"se_resnext{depth}_32x4d", ResNet, family="resnet", block="bottleneck", layers=layers,
                   groups=32, base_width=4, se=TIMM_SE,
                   description=f"SE-ResNeXt-{depth} 32x4d, torchvision/timm layout",
                   source="paper Table 2; timm seresnext")

for depth, layers in {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}.items():
    register_model(f"legacy_se_resnext{depth}_32x4d", ResNet, family="resnet", block="bottleneck",
                   layers=layers, groups=32, base_width=4, se=PAPER_SE, **LEGACY,
                   description=f"SE-ResNeXt-{depth} 32x4d, the authors' Caffe layout",
                   source="authors' released models; timm legacy_seresnext")

# SENet-154 (Appendix): 64x4d ResNeXt-152 stacking, halved first 1x1, three-conv stem,
# 3x3 stride-2 projections, dropout 0.2 before the classifier.
SENET154 = dict(block="bottleneck", layers=(3, 8, 36, 3), groups=64, base_width=4, reduce_first=2,
                stem="deep", down_kernel=3, drop_rate=0.2)
register_model("senet154", ResNet, family="resnet", se=TIMM_SE, **SENET154,
               description="SENet-154, torchvision/timm layout (timm senet154)", source="paper Table 8, Appendix")
register_model("legacy_senet154", ResNet, family="resnet", se=PAPER_SE, **SENET154, **LEGACY,
               description="SENet-154, the authors' Caffe layout (timm legacy_senet154)",
               source="paper Table 8, Appendix; authors' released model")
