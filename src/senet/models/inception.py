"""BN-Inception (Ioffe & Szegedy 2015) and Inception-v3 (Szegedy et al. 2016) with SE blocks on
the output of each Inception module (paper §3.3, Fig. 2: "SE-Inception module").

Both networks are one generic :class:`Inception` built from a stem and a list of modules; each
module is an :class:`InceptionModule` described by its branches (a tuple of :class:`Conv` /
:class:`Pool` steps, a tuple of convs at the end being a split whose outputs are concatenated,
as in Inception-v3's last modules). SE sits after the concatenation of every module, the
grid-reducing ones included: each module's output is what the next one sees, as Fig. 2 draws it.

* ``bn_inception``: the Caffe BN-Inception the authors built SE-BN-Inception from (convs with
  bias, BN eps 1e-5, ceil-mode pooling; 224x224 input). Module names are this project's own,
  after the Caffe layer names (``inception_3a.branch3x3_reduce`` ...).
* ``inception_v3``: timm's / torchvision's layout without the auxiliary head (``Conv2d_1a_3x3``,
  ``Mixed_5b.branch5x5_1.conv`` ..., BN eps 1e-3; 299x299 input), so timm weights load.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.se import SEConfig, make_se
from ..validation import check_choice
from .base import ModelBase
from .common import ConvBnAct, check_common, stage_ends

__all__ = ["Conv", "Pool", "InceptionModule", "Inception", "bn_inception_spec", "inception_v3_spec"]


@dataclasses.dataclass(frozen=True)
class Conv:
    """A conv-BN-ReLU step named ``name`` inside its module."""

    name: str
    out: int
    kernel: int | tuple[int, int] = 1
    stride: int = 1
    padding: int | tuple[int, int] = 0


@dataclasses.dataclass(frozen=True)
class Pool:
    """A parameter-free pooling step (``kind`` ``"avg"`` or ``"max"``)."""

    kind: str
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    ceil: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "avg":  # count_include_pad=True, as in Caffe and torchvision/timm
            return F.avg_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil)
        return F.max_pool2d(x, self.kernel, self.stride, self.padding, ceil_mode=self.ceil)


Step = Union[Conv, Pool, tuple[Conv, ...]]
Branch = tuple[Step, ...]
ConvFactory = Callable[[int, int, Conv], nn.Module]


class InceptionModule(nn.Module):
    """Parallel branches concatenated along channels, then the SE slot (Fig. 2)."""

    def __init__(self, cin: int, branches: Sequence[Branch], conv: ConvFactory, se: SEConfig | None) -> None:
        super().__init__()
        self.branches = tuple(tuple(b) for b in branches)
        self.out_channels = 0
        for branch in self.branches:
            c = cin
            for step in branch:
                if isinstance(step, Pool):
                    continue
                split = step if isinstance(step, tuple) else (step,)
                for s in split:
                    self.add_module(s.name, conv(c, s.out, s))
                c = sum(s.out for s in split)
            self.out_channels += c
        self.se = make_se(se, self.out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for branch in self.branches:
            y = x
            for step in branch:
                if isinstance(step, Pool):
                    y = step(y)
                elif isinstance(step, tuple):
                    y = torch.cat([getattr(self, s.name)(y) for s in step], 1)
                else:
                    y = getattr(self, step.name)(y)
            outputs.append(y)
        return self.se(torch.cat(outputs, 1))


def _bn_inception_module(c1: int, c3r: int, c3: int, d3r: int, d3: int, pool: str, proj: int,
                         stride: int = 1) -> list[Branch]:
    """BN-Inception's module (Ioffe & Szegedy 2015, Fig. 5 / Table 1): 1x1, 1x1->3x3,
    1x1->3x3->3x3 and pool->1x1; a stride-2 module drops the 1x1 and the projection."""
    s = stride
    branches: list[Branch] = []
    if s == 1:
        branches.append((Conv("branch1x1", c1),))
    branches.append((Conv("branch3x3_reduce", c3r), Conv("branch3x3", c3, 3, s, 1)))
    branches.append((Conv("branch3x3dbl_reduce", d3r), Conv("branch3x3dbl_1", d3, 3, 1, 1),
                     Conv("branch3x3dbl_2", d3, 3, s, 1)))
    if s == 1:
        branches.append((Pool(pool, 3, 1, 1, ceil=True), Conv("branch_pool", proj)))
    else:
        branches.append((Pool("max", 3, 2, 0, ceil=True),))
    return branches


def bn_inception_spec() -> tuple[list[tuple[str, Conv | Pool]], list[tuple[str, list[Branch]]]]:
    """Stem and modules of the Caffe BN-Inception (``inception_3a`` ... ``inception_5b``)."""
    stem = [("conv1", Conv("conv1", 64, 7, 2, 3)), ("pool1", Pool("max", 3, 2, 0, ceil=True)),
            ("conv2_reduce", Conv("conv2_reduce", 64)), ("conv2", Conv("conv2", 192, 3, 1, 1)),
            ("pool2", Pool("max", 3, 2, 0, ceil=True))]
    m = _bn_inception_module
    modules = [
        ("inception_3a", m(64, 64, 64, 64, 96, "avg", 32)),
        ("inception_3b", m(64, 64, 96, 64, 96, "avg", 64)),
        ("inception_3c", m(0, 128, 160, 64, 96, "max", 0, stride=2)),
        ("inception_4a", m(224, 64, 96, 96, 128, "avg", 128)),
        ("inception_4b", m(192, 96, 128, 96, 128, "avg", 128)),
        ("inception_4c", m(160, 128, 160, 128, 160, "avg", 128)),
        ("inception_4d", m(96, 128, 192, 160, 192, "avg", 128)),
        ("inception_4e", m(0, 128, 192, 192, 256, "max", 0, stride=2)),
        ("inception_5a", m(352, 192, 320, 160, 224, "avg", 128)),
        ("inception_5b", m(352, 192, 320, 192, 224, "max", 128)),
    ]
    return stem, modules


def _v3_a(pool_features: int) -> list[Branch]:
    return [(Conv("branch1x1", 64),),
            (Conv("branch5x5_1", 48), Conv("branch5x5_2", 64, 5, 1, 2)),
            (Conv("branch3x3dbl_1", 64), Conv("branch3x3dbl_2", 96, 3, 1, 1), Conv("branch3x3dbl_3", 96, 3, 1, 1)),
            (Pool("avg"), Conv("branch_pool", pool_features))]


def _v3_b() -> list[Branch]:
    return [(Conv("branch3x3", 384, 3, 2),),
            (Conv("branch3x3dbl_1", 64), Conv("branch3x3dbl_2", 96, 3, 1, 1), Conv("branch3x3dbl_3", 96, 3, 2)),
            (Pool("max", 3, 2, 0),)]


def _v3_c(c7: int) -> list[Branch]:
    row, col = ((1, 7), (0, 3)), ((7, 1), (3, 0))  # factorised 7x7: 1x7 and 7x1 convs
    return [(Conv("branch1x1", 192),),
            (Conv("branch7x7_1", c7), Conv("branch7x7_2", c7, row[0], 1, row[1]),
             Conv("branch7x7_3", 192, col[0], 1, col[1])),
            (Conv("branch7x7dbl_1", c7), Conv("branch7x7dbl_2", c7, col[0], 1, col[1]),
             Conv("branch7x7dbl_3", c7, row[0], 1, row[1]), Conv("branch7x7dbl_4", c7, col[0], 1, col[1]),
             Conv("branch7x7dbl_5", 192, row[0], 1, row[1])),
            (Pool("avg"), Conv("branch_pool", 192))]


def _v3_d() -> list[Branch]:
    return [(Conv("branch3x3_1", 192), Conv("branch3x3_2", 320, 3, 2)),
            (Conv("branch7x7x3_1", 192), Conv("branch7x7x3_2", 192, (1, 7), 1, (0, 3)),
             Conv("branch7x7x3_3", 192, (7, 1), 1, (3, 0)), Conv("branch7x7x3_4", 192, 3, 2)),
            (Pool("max", 3, 2, 0),)]


def _v3_e() -> list[Branch]:
    return [(Conv("branch1x1", 320),),
            (Conv("branch3x3_1", 384),
             (Conv("branch3x3_2a", 384, (1, 3), 1, (0, 1)), Conv("branch3x3_2b", 384, (3, 1), 1, (1, 0)))),
            (Conv("branch3x3dbl_1", 448), Conv("branch3x3dbl_2", 384, 3, 1, 1),
             (Conv("branch3x3dbl_3a", 384, (1, 3), 1, (0, 1)), Conv("branch3x3dbl_3b", 384, (3, 1), 1, (1, 0)))),
            (Pool("avg"), Conv("branch_pool", 192))]


def inception_v3_spec() -> tuple[list[tuple[str, Conv | Pool]], list[tuple[str, list[Branch]]]]:
    """Stem and modules of Inception-v3 in timm's layout (``Mixed_5b`` ... ``Mixed_7c``)."""
    stem = [("Conv2d_1a_3x3", Conv("", 32, 3, 2)), ("Conv2d_2a_3x3", Conv("", 32, 3)),
            ("Conv2d_2b_3x3", Conv("", 64, 3, 1, 1)), ("Pool1", Pool("max", 3, 2, 0)),
            ("Conv2d_3b_1x1", Conv("", 80)), ("Conv2d_4a_3x3", Conv("", 192, 3)), ("Pool2", Pool("max", 3, 2, 0))]
    modules = [("Mixed_5b", _v3_a(32)), ("Mixed_5c", _v3_a(64)), ("Mixed_5d", _v3_a(64)), ("Mixed_6a", _v3_b()),
               ("Mixed_6b", _v3_c(128)), ("Mixed_6c", _v3_c(160)), ("Mixed_6d", _v3_c(160)),
               ("Mixed_6e", _v3_c(192)), ("Mixed_7a", _v3_d()), ("Mixed_7b", _v3_e()), ("Mixed_7c", _v3_e())]
    return stem, modules


class _PoolModule(nn.Module):
    def __init__(self, pool: Pool) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x)


def _module_stride(branches: Sequence[Branch]) -> int:
    """A grid-reducing module has a stride-2 step in its branches."""
    steps = [s for b in branches for step in b for s in (step if isinstance(step, tuple) else (step,))]
    return max(s.stride for s in steps)


SPECS = {"bn_inception": bn_inception_spec, "inception_v3": inception_v3_spec}


class Inception(ModelBase):
    """An Inception network: a stem of convs and pools, Inception modules with an SE slot each,
    global average pooling and a linear classifier (``fc``).

    Args:
        variant: ``"bn_inception"`` or ``"inception_v3"``.
        num_classes, in_chans, drop_rate: classifier outputs, input channels, dropout before it.
        global_pool: ``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0`` (the feature map).
        eps: BN epsilon (None: the variant's own, 1e-5 for BN-Inception and 1e-3 for v3).
        se: SE options, or ``None`` for the plain network.
    """

    def __init__(self, variant: str = "inception_v3", *, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, global_pool: str = "avg", eps: float | None = None,
                 se: SEConfig | None = None) -> None:
        super().__init__()
        check_common(num_classes, in_chans, drop_rate)
        self.in_chans = in_chans
        check_choice("variant", variant, tuple(SPECS))
        caffe = variant == "bn_inception"
        eps = (1e-5 if caffe else 1e-3) if eps is None else eps
        # Inception-v3's valid-padded stem and reductions need >= 75 px; BN-Inception pads them.
        self.min_input_size = 32 if caffe else 75

        def conv(cin: int, cout: int, s: Conv) -> nn.Module:
            return ConvBnAct(cin, cout, s.kernel, s.stride, s.padding, eps=eps, bias=caffe)

        stem, modules = SPECS[variant]()
        c = in_chans
        steps = []
        for name, step in stem:
            if isinstance(step, Pool):
                self.add_module(name, _PoolModule(step))
            else:
                self.add_module(name, conv(c, step.out, step))
                c = step.out
            steps.append((name, c, step.stride))
        self.module_names = []
        for name, branches in modules:
            module = InceptionModule(c, branches, conv, se)
            self.add_module(name, module)
            self.module_names.append(name)
            c = module.out_channels
            steps.append((name, c, _module_stride(branches)))
        self.init_layout([name for name, _ in stem], self.module_names, stage_ends(steps))
        self.init_head(c, num_classes, drop_rate, global_pool=global_pool)
        self.init_weights()
