"""Registered residual networks for 32x32 input (paper §5.1, Tables 4-5).

* ``resnet20/32/44/56/110``: the CIFAR ResNets of He et al. 2016 §4.2 (3 stages of 16/32/64
  channels, option A zero-padding shortcuts, 0.27M parameters for ResNet-20).
* ``preact_resnet110/164``: pre-activation ResNets (He et al. 2016b), as in Tables 4-5.
* ``wrn16_8``: Wide ResNet 16-8 (Zagoruyko & Komodakis 2016).

SE twins use r = 16, the paper's default (§5.1 gives no CIFAR-specific r).
"""

from __future__ import annotations

from ...layers.se import SEConfig
from ..registry import register_model
from ..resnet import ResNet

CIFAR = dict(stem="cifar", stem_width=16, num_classes=10, input_size=(3, 32, 32))
SE = SEConfig()

for depth in (20, 32, 44, 56, 110):
    n = (depth - 2) // 6
    for prefix, se in (("", None), ("se_", SE)):
        register_model(f"{prefix}resnet{depth}", ResNet, family="cifar", block="basic", layers=(n, n, n),
                       widths=(16, 32, 64), shortcut="A", se=se, **CIFAR,
                       description=f"{'SE-' if se else ''}ResNet-{depth} for CIFAR (He et al. 2016, option A)",
                       source="ResNet paper §4.2")

PREACT = {110: ("preact_basic", 18), 164: ("preact_bottleneck", 18)}
for depth, (block, n) in PREACT.items():
    for prefix, se in (("", None), ("se_", SE)):
        register_model(f"{prefix}preact_resnet{depth}", ResNet, family="cifar", block=block, layers=(n, n, n),
                       widths=(16, 32, 64), se=se, **CIFAR,
                       description=f"{'SE-' if se else ''}pre-activation ResNet-{depth} for CIFAR",
                       source="paper Tables 4-5")

for prefix, se in (("", None), ("se_", SE)):
    register_model(f"{prefix}wrn16_8", ResNet, family="cifar", block="preact_basic", layers=(2, 2, 2),
                   widths=(128, 256, 512), se=se, **CIFAR,
                   description=f"{'SE-' if se else ''}Wide ResNet 16-8 for CIFAR", source="paper Tables 4-5")
