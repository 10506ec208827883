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

from typing import Any

from ...layers.se import SEConfig
from ...published import PretrainedConfig
from ..registry import register_model
from ..resnet import ResNet


def timm_weights(name: str, **options: Any) -> PretrainedConfig:
    """The published weights ``timm/<name>`` on the Hugging Face hub; ``name`` is timm's ``model.tag``."""
    return PretrainedConfig(name.partition(".")[2], hub_id=f"timm/{name}", **options)


# Published weights (timm's default tag first). RSB "a1/a2" recipes evaluate at crop 0.95,
# bicubic (Wightman et al. 2021); Cadene's ports of the authors' Caffe models at 224/0.875.
RSB = dict(crop_pct=0.95, interpolation="bicubic")
TIMM_WEIGHTS = {
    "resnet18": (timm_weights("resnet18.a1_in1k", **RSB),),
    "resnet34": (timm_weights("resnet34.a1_in1k", **RSB),),
    "resnet50": (timm_weights("resnet50.a1_in1k", **RSB),),
    "resnet101": (timm_weights("resnet101.a1h_in1k", **RSB),),
    "resnet152": (timm_weights("resnet152.a1h_in1k", **RSB),),
    "se_resnet50": (timm_weights("seresnet50.a1_in1k", **RSB),
                    timm_weights("seresnet50.a2_in1k", **RSB),
                    timm_weights("seresnet50.a3_in1k", input_size=(3, 160, 160), **RSB),
                    timm_weights("seresnet50.ra2_in1k", interpolation="bicubic")),
    "resnext50_32x4d": (timm_weights("resnext50_32x4d.a1h_in1k", **RSB),),
    "resnext101_32x4d": (timm_weights("resnext101_32x4d.gluon_in1k", interpolation="bicubic"),),
    "se_resnext50_32x4d": (timm_weights("seresnext50_32x4d.racm_in1k", interpolation="bicubic"),),
    "se_resnext101_32x4d": (timm_weights("seresnext101_32x4d.gluon_in1k", interpolation="bicubic"),),
    "senet154": (timm_weights("senet154.gluon_in1k", interpolation="bicubic"),),
}
CADENE = "http://data.lip6.fr/cadene/pretrainedmodels/"
TIMM_V01 = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-weights/"
LEGACY_URLS = {  # timm's tag for all of them is "in1k"
    "legacy_se_resnet18": TIMM_V01 + "seresnet18-4bb0ce65.pth",
    "legacy_se_resnet34": TIMM_V01 + "seresnet34-a4004e63.pth",
    "legacy_se_resnet50": CADENE + "se_resnet50-ce0d4300.pth",
    "legacy_se_resnet101": CADENE + "se_resnet101-7e38fcc6.pth",
    "legacy_se_resnet152": CADENE + "se_resnet152-d17c99b7.pth",
    "legacy_se_resnext26_32x4d": TIMM_V01 + "seresnext26_32x4d-65ebdb501.pth",
    "legacy_se_resnext50_32x4d": CADENE + "se_resnext50_32x4d-a260b3a4.pth",
    "legacy_se_resnext101_32x4d": CADENE + "se_resnext101_32x4d-3b2fe3d8.pth",
    "legacy_senet154": CADENE + "senet154-c7b49a05.pth",
}


def weights(name: str) -> tuple[PretrainedConfig, ...]:
    if name in LEGACY_URLS:
        return (PretrainedConfig("in1k", source="legacy", url=LEGACY_URLS[name]),)
    return TIMM_WEIGHTS.get(name, ())


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
    register_model(f"resnet{depth}", ResNet, family="resnet", pretrained=weights(f"resnet{depth}"),
                   block=block, layers=layers,
                   description=f"ResNet-{depth} (He et al. 2016), torchvision layout",
                   source="paper Table 2 baseline")
    register_model(f"se_resnet{depth}", ResNet, family="resnet", pretrained=weights(f"se_resnet{depth}"),
                   aliases=(f"seresnet{depth}",), block=block, layers=layers, se=TIMM_SE,
                   description=f"SE-ResNet-{depth}, torchvision/timm layout (timm seresnet{depth})",
                   source="paper Table 2; timm seresnet")
    register_model(f"legacy_se_resnet{depth}", ResNet, family="resnet", layout="legacy",
                   pretrained=weights(f"legacy_se_resnet{depth}"), aliases=(f"legacy_seresnet{depth}",),
                   block=block, layers=layers,
                   stride_in_1x1=block == "bottleneck", branch_act=block == "basic", se=PAPER_SE, **LEGACY,
                   description=f"SE-ResNet-{depth}, the authors' Caffe layout (timm legacy_seresnet{depth})",
                   source="paper Table 2; authors' released models")

for depth, layers in {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}.items():
    register_model(f"resnext{depth}_32x4d", ResNet, family="resnet", pretrained=weights(f"resnext{depth}_32x4d"),
                   block="bottleneck", layers=layers,
                   groups=32, base_width=4,
                   description=f"ResNeXt-{depth} 32x4d (Xie et al. 2017), torchvision layout",
                   source="paper Table 2 baseline")
    register_model(f"se_resnext{depth}_32x4d", ResNet, family="resnet", pretrained=weights(f"se_resnext{depth}_32x4d"),
                   aliases=(f"seresnext{depth}_32x4d",), block="bottleneck", layers=layers,
                   groups=32, base_width=4, se=TIMM_SE,
                   description=f"SE-ResNeXt-{depth} 32x4d, torchvision/timm layout",
                   source="paper Table 2; timm seresnext")

for depth, layers in {26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}.items():
    register_model(f"legacy_se_resnext{depth}_32x4d", ResNet, family="resnet", layout="legacy",
                   pretrained=weights(f"legacy_se_resnext{depth}_32x4d"),
                   aliases=(f"legacy_seresnext{depth}_32x4d",), block="bottleneck",
                   layers=layers, groups=32, base_width=4, se=PAPER_SE, **LEGACY,
                   description=f"SE-ResNeXt-{depth} 32x4d, the authors' Caffe layout",
                   source="authors' released models; timm legacy_seresnext")

# SENet-154 (Appendix): 64x4d ResNeXt-152 stacking, halved first 1x1, three-conv stem,
# 3x3 stride-2 projections, dropout 0.2 before the classifier.
SENET154 = dict(block="bottleneck", layers=(3, 8, 36, 3), groups=64, base_width=4, reduce_first=2,
                stem="deep", down_kernel=3, drop_rate=0.2)
register_model("senet154", ResNet, family="resnet", pretrained=weights("senet154"), se=TIMM_SE, **SENET154,
               description="SENet-154, torchvision/timm layout (timm senet154)", source="paper Table 8, Appendix")
register_model("legacy_senet154", ResNet, family="resnet", layout="legacy", pretrained=weights("legacy_senet154"),
               se=PAPER_SE, **SENET154, **LEGACY,
               description="SENet-154, the authors' Caffe layout (timm legacy_senet154)",
               source="paper Table 8, Appendix; authors' released model")
