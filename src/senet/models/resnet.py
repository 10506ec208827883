"""One residual network family for every ResNet, ResNeXt, SE-ResNet, SE-ResNeXt and SENet of the
paper (§3.3, Fig. 3, Table 1; Appendix for SENet-154), and the CIFAR residual networks of §5.1.

Variants are arguments of :class:`ResNet`, not classes. Module names follow the torchvision /
timm layout (``conv1``, ``bn1``, ``layer1..4``, ``fc``; SE at ``layerN.M.se.fc1/fc2``) so their
weights load directly; the authors' Caffe layout is converted by :mod:`senet.weights`.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from ..errors import UserInputError
from ..layers import fused_se
from ..layers.se import SEConfig, SqueezeExcite, make_se
from ..validation import check_choice
from .base import ModelBase
from .common import check_common, drop_path_rates, he_init, make_drop_path, stage_ends

__all__ = ["ResNet", "BLOCKS", "STEMS"]


def conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class PadShortcut(nn.Module):
    """Option A shortcut of the CIFAR ResNets (He et al. 2016, §4.2): subsample and zero-pad
    the channels, so the shortcut adds no parameters."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride, self.extra = stride, cout - cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


def make_shortcut(kind: str, cin: int, cout: int, stride: int, kernel: int, norm: bool) -> nn.Module | None:
    """Projection for the identity branch when shape changes (None when it does not).

    ``kernel=3`` is SENet-154's 3x3 stride-2 projection (Appendix): only strided projections use
    it, the stride-1 projection of the first stage stays 1x1 as in the released model. Pre-activation blocks
    project their already normalised input, so they use no BN here (``norm=False``).
    """
    if stride == 1 and cin == cout:
        return None
    if kind == "A":
        return PadShortcut(cin, cout, stride)
    kernel = kernel if stride > 1 else 1
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout)) if norm else nn.Sequential(conv)


def merge_branches(se: nn.Module, out: torch.Tensor, shortcut: torch.Tensor, act: nn.Module | None,
                   fused: bool | None) -> torch.Tensor:
    """The end of a unit with SE at the standard position: ``act(se(out) + shortcut)`` (Fig. 3).

    On the fused path (:mod:`senet.layers.fused_se`) the scaling, addition and ReLU are one Triton
    kernel (and the plain unit's ``relu(out + shortcut)`` the same kernel without scaling, so an
    SE/plain ratio measures SE alone). Elsewhere it is the reference composition, done in place when
    no gradient is recorded (inference): ``out`` is the branch's own fresh tensor.
    """
    is_se = type(se) is SqueezeExcite and not (se._forward_hooks or se._forward_pre_hooks)
    relu = act is not None and type(act) is nn.ReLU
    if (is_se or isinstance(se, nn.Identity)) and (relu or act is None) and fused_se.use_fused(fused, out) \
            and (not is_se or se.squeeze_kind != "none") and out.shape == shortcut.shape:
        shortcut = shortcut.to(out.dtype)  # autocast may leave a projection shortcut in another dtype
        if is_se:
            return fused_se.se_apply(out, se.scale(out), shortcut, relu=relu)
        return fused_se.add_relu(out, shortcut) if relu else out + shortcut
    # In place needs the dtypes, which a torch.fx trace cannot read: traced graphs keep the plain form.
    if not torch.is_grad_enabled() and not torch.fx._symbolic_trace.is_fx_symbolic_tracing() \
            and out.dtype == torch.promote_types(out.dtype, shortcut.dtype):
        if is_se:
            out = out.mul_(se.scale(out))
        elif not isinstance(se, nn.Identity):
            out = se(out)
        out = out.add_(shortcut)
        return out if act is None else act(out)
    out = se(out) + shortcut
    return out if act is None else act(out)


_NO_SE = nn.Identity()  # the SE slot once SE was applied before stochastic depth


class Block(nn.Module):
    """Shared wiring of every residual unit: where the SE slot sits (Fig. 5, Tables 14-15).

    Subclasses build ``residual(x)`` (the branch up to, not including, the standard SE) and
    say which width the SE slot needs for each position.
    """

    expansion = 1
    preact = False

    def __init__(self, position: str, drop_path: float = 0.0) -> None:
        super().__init__()
        self.position = position
        self.fused: bool | None = None  # see senet.layers.set_fused
        # Stochastic depth of the residual branch (None at 0: the unit is exactly the plain one).
        self.drop_path = make_drop_path(drop_path)

    def residual(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def entry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual branch's input and the shortcut."""
        return x, x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, shortcut = self.entry(x)
        if self.position == "pre":  # SE-PRE: recalibrate the unit's input, identity untouched
            x = self.se(x)
        out = self.residual(x)
        if self.position == "standard":
            se = self.se
            if self.drop_path is not None:  # as timm: the branch is dropped after SE, before the sum
                out, se = self.drop_path(se(out)), _NO_SE
            return merge_branches(se, out, shortcut, None if self.preact else self.act_out, self.fused)
        if self.position == "identity":  # SE-Identity: on the identity branch, in parallel
            shortcut = self.se(shortcut)
        if self.drop_path is not None:
            out = self.drop_path(out)
        out = out + shortcut
        if not self.preact:
            out = self.act_out(out)
        if self.position == "post":  # SE-POST: after the addition (and its ReLU, if any)
            out = self.se(out)
        return out


class BasicBlock(Block):
    """Two 3x3 convolutions (ResNet-18/34 and the CIFAR ResNets)."""

    def __init__(self, cin: int, planes: int, stride: int, se: SEConfig | None, *, shortcut: str = "B",
                 down_kernel: int = 1, branch_act: bool = False, drop_path: float = 0.0) -> None:
        super().__init__(se.position if se else "standard", drop_path)
        cout = planes * self.expansion
        self.conv1, self.bn1 = conv_bn(cin, planes, 3, stride)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv_bn(planes, cout, 3)
        # timm's legacy_seresnet18/34 apply a ReLU after bn2, before SE; their weights need it.
        self.act2 = nn.ReLU(inplace=True) if branch_act else nn.Identity()
        se_channels = {"pre": cin, "3x3": planes}.get(self.position, cout)
        self.se = make_se(se, se_channels)
        self.act_out = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, cin, cout, stride, down_kernel, norm=True)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        if self.position == "3x3":  # basic units: after the first 3x3 conv (inside the unit)
            out = self.se(out)
        return self.act2(self.bn2(self.conv2(out)))


class Bottleneck(Block):
    """1x1 reduce, 3x3 (grouped for ResNeXt), 1x1 expand (ResNet-50+, ResNeXt, SENet-154).

    ``stride_in_1x1`` puts the stride on the first 1x1 as the original ResNet and the authors'
    released SE-ResNets do (this is what makes the paper's 3.86 GFLOPs); torchvision/timm put
    it on the 3x3 ("ResNet v1.5"). ``reduce_first`` divides the first 1x1's width (2 in SENet-154).
    """

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, se: SEConfig | None, *, groups: int = 1,
                 base_width: int = 64, stride_in_1x1: bool = False, reduce_first: int = 1,
                 shortcut: str = "B", down_kernel: int = 1, drop_path: float = 0.0) -> None:
        super().__init__(se.position if se else "standard", drop_path)
        width = int(planes * base_width / 64) * groups
        first = width // reduce_first
        cout = planes * self.expansion
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1, self.bn1 = conv_bn(cin, first, 1, s1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = conv_bn(first, width, 3, s3, groups)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3, self.bn3 = conv_bn(width, cout, 1)
        se_channels = {"pre": cin, "3x3": width}.get(self.position, cout)
        self.se = make_se(se, se_channels)
        self.act_out = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(shortcut, cin, cout, stride, down_kernel, norm=True)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        if self.position == "3x3":  # SE-3x3 (Table 15): directly after the 3x3 conv
            out = self.se(out)
        return self.bn3(self.conv3(out))


class PreActBlock(Block):
    """Pre-activation units (He et al. ECCV 2016): BN-ReLU before each conv, no ReLU after the
    addition. Basic form for pre-act ResNet-110 and WRN-16-8; bottleneck form for ResNet-164."""

    preact = True

    def __init__(self, cin: int, planes: int, stride: int, se: SEConfig | None, *, bottleneck: bool,
                 shortcut: str = "B", down_kernel: int = 1, drop_path: float = 0.0) -> None:
        super().__init__(se.position if se else "standard", drop_path)
        self.expansion = 4 if bottleneck else 1
        cout = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU(inplace=True)
        if bottleneck:
            self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
            self.bn2, self.act2 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn3, self.act3 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
            self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        else:
            self.conv1 = nn.Conv2d(cin, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2, self.act2 = nn.BatchNorm2d(planes), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, cout, 3, padding=1, bias=False)
        self.bottleneck = bottleneck
        se_channels = {"pre": cin, "3x3": planes}.get(self.position, cout)
        self.se = make_se(se, se_channels)
        self.downsample = make_shortcut(shortcut, cin, cout, stride, down_kernel, norm=False)

    def entry(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The projection shortcut sees the pre-activated input, as in the original code.
        pre = self.act1(self.bn1(x))
        return pre, x if self.downsample is None else self.downsample(pre)

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.act2(self.bn2(out))
        if self.bottleneck:
            out = self.conv2(out)
            out = self.act3(self.bn3(out))
            if self.position == "3x3":
                out = self.se(out)
            return self.conv3(out)
        if self.position == "3x3":
            out = self.se(out)
        return self.conv2(out)


BLOCKS = {
    "basic": (BasicBlock, 1),
    "bottleneck": (Bottleneck, 4),
    "preact_basic": (functools.partial(PreActBlock, bottleneck=False), 1),
    "preact_bottleneck": (functools.partial(PreActBlock, bottleneck=True), 4),
}
STEMS = ("7x7", "deep", "cifar")


class ResNet(ModelBase):
    """The residual family: ResNet, ResNeXt, SE-ResNet, SE-ResNeXt, SENet-154, CIFAR ResNets.

    Args:
        block: ``"basic"``, ``"bottleneck"``, ``"preact_basic"`` or ``"preact_bottleneck"``.
        layers: units per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50 (Table 1).
        num_classes: classifier outputs. in_chans: input channels (1 for grey images).
        widths: planes per stage (the bottleneck's inner width for ``groups=1``).
        groups, base_width: ResNeXt cardinality and width per group (32x4d: 32, 4).
        reduce_first: divide each bottleneck's first 1x1 width (SENet-154: 2, Appendix).
        stem: ``"7x7"`` (conv 7x7/2 + max-pool), ``"deep"`` (three 3x3 convs, SENet-154) or
            ``"cifar"`` (one 3x3 conv, no pooling, for 32x32 input).
        stem_width: output width of the first conv(s); the deep stem ends at twice this.
        pool_ceil: Caffe-style max-pool (no padding, ceil mode) of the authors' models, instead
            of the torchvision pool with padding 1.
        down_kernel: projection shortcut kernel, 1 or 3 (SENet-154).
        stride_in_1x1: put the stride of bottlenecks on the first 1x1 (original ResNet/Caffe).
        shortcut: ``"B"`` (projection when the shape changes) or ``"A"`` (zero-padding, CIFAR).
        branch_act: basic units end their residual branch with a ReLU (before SE), as the
            ``legacy_seresnet18/34`` weights of timm were trained.
        drop_rate: dropout before the classifier (0.2 for SENet-154).
        drop_path_rate: stochastic depth (Huang et al. 2016), timm's linear rule: unit ``i`` of
            the network's ``n`` units drops its residual branch with probability
            ``drop_path_rate * i / (n - 1)`` in training (``drop_path_rates``). 0 builds exactly
            the network without it (same modules, keys and outputs).
        global_pool: ``"avg"`` (the paper), ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0``.
        se: SE options (:class:`~senet.layers.se.SEConfig`), or ``None`` for the plain network.
        zero_init_last: zero the last BN of each residual branch (Goyal et al. 2017).
        fused: the fused Triton SE operator (:mod:`senet.layers.fused_se`) for the end of each unit,
            ``relu(u * s + shortcut)`` (the plain net's ``relu(u + shortcut)`` alike): ``True`` uses
            it where it applies (CUDA, or CPU under ``TRITON_INTERPRET=1``); ``None`` (the default)
            and ``False`` keep the PyTorch composition. Same weights and state_dict either way;
            change it later with :func:`senet.layers.set_fused`.
    """

    def __init__(
        self,
        block: str,
        layers: Sequence[int],
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (64, 128, 256, 512),
        groups: int = 1,
        base_width: int = 64,
        reduce_first: int = 1,
        stem: str = "7x7",
        stem_width: int = 64,
        pool_ceil: bool = False,
        down_kernel: int = 1,
        stride_in_1x1: bool = False,
        shortcut: str = "B",
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        branch_act: bool = False,
        se: SEConfig | None = None,
        zero_init_last: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__()
        check_choice("block", block, tuple(BLOCKS))
        check_choice("stem", stem, STEMS)
        check_choice("shortcut", shortcut, ("A", "B"))
        check_choice("down_kernel", down_kernel, (1, 3))
        if len(layers) != len(widths) or not all(n >= 1 for n in layers):
            raise UserInputError(f"layers={tuple(layers)} must give >= 1 unit for each of the {len(widths)} widths")
        check_common(num_classes, in_chans, drop_rate, drop_path_rate=drop_path_rate)
        self.in_chans = in_chans
        make_block, expansion = BLOCKS[block]
        preact = block.startswith("preact")
        if se is not None:
            for s in se.stages or ():
                se.applies_to(s, len(layers))  # validates stage indices early

        # Stem (Table 1 "conv1"; Appendix for the three-conv stem of SENet-154).
        if stem == "deep":
            self.conv1 = nn.Sequential(
                *conv_bn(in_chans, stem_width, 3, 2), nn.ReLU(inplace=True),
                *conv_bn(stem_width, stem_width, 3), nn.ReLU(inplace=True),
                nn.Conv2d(stem_width, 2 * stem_width, 3, padding=1, bias=False),
            )
            stem_out, stem_stride = 2 * stem_width, 2
        else:
            kernel, stem_stride = (7, 2) if stem == "7x7" else (3, 1)
            self.conv1 = nn.Conv2d(in_chans, stem_width, kernel, stride=stem_stride, padding=kernel // 2, bias=False)
            stem_out = stem_width
        # Pre-activation nets normalise at the start of each unit instead (He et al. 2016b).
        self.bn1 = nn.Identity() if preact else nn.BatchNorm2d(stem_out)
        self.act1 = nn.Identity() if preact else nn.ReLU(inplace=True)
        if stem == "cifar":
            self.maxpool: nn.Module = nn.Identity()
        elif pool_ceil:
            self.maxpool = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        else:
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        steps = [("act1", stem_out, stem_stride), ("maxpool", stem_out, 1 if stem == "cifar" else 2)]

        cin = stem_out
        unit_drop = iter(drop_path_rates(drop_path_rate, sum(layers)))
        self.stage_names: list[str] = []
        for i, (n, planes) in enumerate(zip(layers, widths)):
            stage_se = se if se is not None and se.applies_to(i + 1, len(layers)) else None
            units = []
            for j in range(n):
                stride = 2 if (j == 0 and i > 0) else 1
                kwargs: dict[str, object] = dict(shortcut=shortcut, down_kernel=down_kernel,
                                                 drop_path=next(unit_drop))
                if block == "basic":
                    kwargs.update(branch_act=branch_act)
                elif branch_act:
                    raise UserInputError(f"branch_act applies to block='basic' only, not {block!r}")
                if block == "bottleneck":
                    kwargs.update(groups=groups, base_width=base_width, stride_in_1x1=stride_in_1x1,
                                  reduce_first=reduce_first)
                units.append(make_block(cin, planes, stride, stage_se, **kwargs))
                cin = planes * expansion
            name = f"layer{i + 1}"
            self.add_module(name, nn.Sequential(*units))
            self.stage_names.append(name)
            steps.append((name, cin, 2 if i else 1))

        self.final_norm = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True)) if preact else nn.Identity()
        # feature_info: the stem's activation and each stage's output (a detector's C2..C5 are the
        # last four for the ImageNet networks).
        self.init_layout(["conv1", "bn1", "act1", "maxpool"], self.stage_names, stage_ends(steps),
                         norm="final_norm" if preact else None)
        self.init_head(cin, num_classes, drop_rate, global_pool=global_pool)
        self.reset_parameters(zero_init_last)
        fused_se.set_fused(self, fused)

    def reset_parameters(self, zero_init_last: bool = False) -> None:
        """He (MSRA) initialisation of the paper (§5.1, SE at PyTorch's defaults: ``he_init``);
        optionally zero the last BN of each residual branch so every unit starts as the identity
        (Goyal et al. 2017)."""
        he_init(self)
        if zero_init_last:
            for m in self.modules():
                last = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
                if isinstance(m, (Bottleneck, BasicBlock)) and isinstance(last, nn.BatchNorm2d):
                    nn.init.zeros_(last.weight)

    def stages(self) -> list[nn.Sequential]:
        """The residual stages in order (layer1, layer2, ...)."""
        return [getattr(self, n) for n in self.stage_names]
