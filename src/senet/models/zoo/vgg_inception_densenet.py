"""Registered non-residual and multi-branch networks: VGG-16 with and without BN, BN-Inception,
Inception-v3 and Inception-ResNet-v2 of paper Table 2, and two extras, DenseNet-121/169/201 and a
10-layer CIFAR network (docs/fidelity.md lists their costs). Every SE model has its plain twin
(the same builder with ``se=None``). SE options follow the paper (r = 16, FC biases as in the
authors' Caffe models), except r = 8 for the 10-layer CIFAR network.
"""

from __future__ import annotations

from typing import Any

from ...layers.se import SEConfig
from ...published import INCEPTION_MEAN, INCEPTION_STD, PretrainedConfig
from ..densenet import DEPTHS, DenseNet
from ..inception import Inception
from ..inception_resnet import InceptionResNetV2
from ..registry import register_model
from ..vgg import CIFAR10_LAYER, VGG, VGG16


def timm_weights(name: str, **options: Any) -> PretrainedConfig:
    """The published weights ``timm/<name>`` on the Hugging Face hub; ``name`` is timm's ``model.tag``."""
    return PretrainedConfig(name.partition(".")[2], hub_id=f"timm/{name}", **options)


PAPER_SE = SEConfig()
TF = dict(input_size=(3, 299, 299), mean=INCEPTION_MEAN, std=INCEPTION_STD, interpolation="bicubic")
# Published weights of the plain networks (timm's default tags). The torchvision Inception-v3
# file also holds the auxiliary classifier, which these models do not have.
WEIGHTS = {
    "vgg16": (timm_weights("vgg16.tv_in1k"),),
    "vgg16_bn": (timm_weights("vgg16_bn.tv_in1k"),),
    "inception_v3": (timm_weights("inception_v3.tv_in1k", drop_keys=("AuxLogits.",), **TF),),
    "inception_resnet_v2": (timm_weights("inception_resnet_v2.tf_in1k", **{**TF, "crop_pct": 0.8975}),),
    "densenet121": (timm_weights("densenet121.ra_in1k", interpolation="bicubic"),),
    "densenet169": (timm_weights("densenet169.tv_in1k", interpolation="bicubic"),),
    "densenet201": (timm_weights("densenet201.tv_in1k", interpolation="bicubic"),),
}


def _pair(name: str, builder, *, family: str, description: str, source: str, se: SEConfig = PAPER_SE,
          **defaults) -> None:
    register_model(name, builder, family=family, description=description, source=source, se=None,
                   pretrained=WEIGHTS.get(name, ()), **defaults)
    register_model(f"se_{name}", builder, family=family, description=f"SE-{description}", source=source,
                   se=se, **defaults)


for bn in (False, True):
    suffix = "_bn" if bn else ""
    _pair(f"vgg16{suffix}", VGG, family="vgg", layers=VGG16, norm=bn,
          description=f"VGG-16{'-BN' if bn else ''} (SE after each conv's ReLU), timm layout",
          source="paper Table 2 (VGG-16 trained with BN); timm vgg16" + suffix)

_pair("bn_inception", Inception, family="inception", variant="bn_inception",
      description="BN-Inception (Ioffe & Szegedy 2015; SE on each module's output), Caffe layout",
      source="paper Table 2; authors' SE-BN-Inception")
_pair("inception_v3", Inception, family="inception", variant="inception_v3", input_size=(3, 299, 299),
      description="Inception-v3 without aux head (SE on each module's output), timm layout",
      source="paper Fig. 2; timm inception_v3")
_pair("inception_resnet_v2", InceptionResNetV2, family="inception", input_size=(3, 299, 299),
      description="Inception-ResNet-v2 (SE on each residual branch), timm layout",
      source="paper Table 2; timm inception_resnet_v2")

for depth, layers in DEPTHS.items():
    _pair(f"densenet{depth}", DenseNet, family="densenet", layers=layers,
          description=f"DenseNet-{depth} (k=32, BC; SE on each dense layer's new maps), timm layout",
          source="not in the paper (docs/fidelity.md); timm densenet" + str(depth))

_pair("cifar_convnet10", VGG, family="cifar", layers=CIFAR10_LAYER, norm=True, head="gap", num_classes=10,
      input_size=(3, 32, 32), se=SEConfig(reduction=8),
      description="10-layer CIFAR ConvNet of the transfer-learning study (conv-BN-ReLU x9, GAP; SE r=8 after each)",
      source="this project (conv-BN-ReLU x9 with SE r=8, for transfer; docs/backbones.md)")
