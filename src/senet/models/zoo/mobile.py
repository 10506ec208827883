"""Registered mobile networks of paper Table 3: MobileNetV1 1.0-224 and ShuffleNetV1 1x (g=3),
each with its SE twin (r = 16, FC biases) and the plain baseline (``se=None``)."""

from __future__ import annotations

from ...layers.se import SEConfig
from ...published import INCEPTION_MEAN, INCEPTION_STD, PretrainedConfig
from ..mobilenet import MobileNetV1
from ..registry import register_model
from ..shufflenet import ShuffleNetV1

PAPER_SE = SEConfig()
MOBILENET_V1 = (PretrainedConfig("ra4_e3600_r224_in1k", hub_id="timm/mobilenetv1_100.ra4_e3600_r224_in1k",
                                 mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic"),)

for prefix, se in (("", None), ("se_", PAPER_SE)):
    tag = "SE-" if se else ""
    register_model(f"{prefix}mobilenet_v1", MobileNetV1, family="mobile", se=se,
                   pretrained=() if se else MOBILENET_V1, aliases=() if se else ("mobilenetv1_100",),
                   description=f"{tag}MobileNetV1 1.0-224 (SE on each block's output), timm layout",
                   source="paper Table 3; timm mobilenetv1_100")
    register_model(f"{prefix}shufflenet_v1_g3", ShuffleNetV1, family="mobile", groups=3, se=se,
                   description=f"{tag}ShuffleNetV1 1x g=3 (SE on each unit's branch)",
                   source="paper Table 3")
