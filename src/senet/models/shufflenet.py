"""ShuffleNetV1 (Zhang et al. 2017) and SE-ShuffleNet (paper Table 3: "ShuffleNet 1x (g=3)").

A ShuffleNet unit is a bottleneck residual unit: 1x1 group conv -> channel shuffle -> 3x3
depthwise conv -> 1x1 group conv, added to the identity (stride 1) or concatenated with a 3x3
average-pooled shortcut (stride 2), then ReLU.

Where SE sits: on the unit's branch, after the last group conv and its BN, before the addition or
concatenation. That is the paper's rule for residual networks (§3.3, Fig. 3: SE on the
non-identity branch before it is aggregated with the identity); in a stride-2 unit the pooled
shortcut plays the identity's role and is left untouched. With r = 16 this placement adds 0.62M
parameters to the 1.87M of the plain 1x g=3 network (Table 3 truncates: 1.8M -> 2.4M).

Cost: every group count reproduces the ShuffleNet paper's Table 1 to the MFLOP (143, 140, 137,
133, 137 M for g = 1, 2, 3, 4, 8; convolutions without the classifier). The SE paper's "140" for
g=3 is the nominal budget the ShuffleNet paper gives every 1x network; see docs/fidelity.md.
No library we know of ships an SE-ShuffleNet; module names here are this project's own.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserInputError
from ..layers.se import SEConfig, make_se
from .base import ModelBase
from .common import check_common, drop_path_rates, make_drop_path, stage_ends

__all__ = ["ShuffleNetV1", "STAGE_WIDTHS"]

# Output channels of stages 2-4 for each group count at 1x (ShuffleNet paper, Table 1).
STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                8: (384, 768, 1536)}
REPEATS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave the channels of ``groups`` groups so the next group conv mixes them (§3.1)."""
    # Written without reading the shape, so torch.fx traces it.
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """One ShuffleNet unit (Fig. 2b for stride 1, Fig. 2c for stride 2), SE slot on the branch."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int, first_groups: int,
                 se: SEConfig | None, drop_path: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        # Stochastic depth only where the branch is summed with the input (stride 1): a strided
        # unit concatenates, and dropping its branch would zero channels, not skip the unit.
        self.drop_path = make_drop_path(drop_path) if stride == 1 else None
        mid = cout // 4  # bottleneck: 1/4 of the unit's output channels (§3.2)
        branch_out = cout - cin if stride == 2 else cout
        self.shuffle_groups = first_groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)  # no ReLU after the depthwise conv (§3.2)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.se = make_se(se, branch_out)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.act_out = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        out = self.bn2(self.conv2(out))
        out = self.se(self.bn3(self.conv3(out)))
        shortcut = self.shortcut(x)
        if self.drop_path is not None:
            out = self.drop_path(out)
        out = torch.cat((shortcut, out), 1) if self.stride == 2 else out + shortcut
        return self.act_out(out)


class ShuffleNetV1(ModelBase):
    """ShuffleNetV1 at 1x width: 3x3 stride-2 stem (24 channels), max-pool, three stages of
    4/8/4 units, global pooling and a linear classifier.

    Args:
        groups: g, the group count of the 1x1 convolutions (1, 2, 3, 4 or 8).
        num_classes, in_chans, drop_rate: classifier outputs, input channels, dropout before it.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        drop_path_rate: stochastic depth of the stride-1 units (those with a residual sum), timm's
            linear rule over all units in order (``drop_path_rates``); 0: none.
        se: SE options, or ``None`` for the plain network.
    """

    min_input_size = 32

    def __init__(self, groups: int = 3, *, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 global_pool: str = "avg", drop_path_rate: float = 0.0, se: SEConfig | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate, drop_path_rate=drop_path_rate)
        dpr = iter(drop_path_rates(drop_path_rate, sum(REPEATS)))
        self.in_chans = in_chans
        if groups not in STAGE_WIDTHS:
            raise UserInputError(f"groups={groups!r} is not supported; allowed values: {', '.join(map(str, STAGE_WIDTHS))}")
        stem = 24
        self.conv1 = nn.Conv2d(in_chans, stem, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = stem
        for i, (cout, n) in enumerate(zip(STAGE_WIDTHS[groups], REPEATS)):
            units = []
            for j in range(n):
                # The very first 1x1 conv is not grouped: its 24 input channels are too few (§3.3).
                first_groups = 1 if (i == 0 and j == 0) else groups
                units.append(ShuffleUnit(cin, cout, 2 if j == 0 else 1, groups, first_groups, se, next(dpr)))
                cin = cout
            self.add_module(f"stage{i + 2}", nn.Sequential(*units))
        self.init_layout(["conv1", "bn1", "act1", "maxpool"], [f"stage{i + 2}" for i in range(len(REPEATS))],
                         stage_ends([("act1", stem, 2), ("maxpool", stem, 2)] + [
                             (f"stage{i + 2}", c, 2) for i, c in enumerate(STAGE_WIDTHS[groups])]))
        self.init_head(cin, num_classes, drop_rate, global_pool=global_pool)
        self.init_weights()
