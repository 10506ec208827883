"""The model base every family inherits: the classifier head, weight init and timm's model API
(docs/backbones.md).

A family builds its modules, then declares its layout with :meth:`ModelBase.init_layout`: the
stem and stage steps (dotted module names run in order by ``forward_features``), the optional
final norm, and its ``feature_info``; :meth:`ModelBase.init_head` adds global pooling, dropout
and the linear classifier under the family's published key (``fc``, ``classifier``,
``classif``, ``head.fc``), so published weights load. Everything else is here, once:
``forward_intermediates``, ``prune_intermediate_layers``, activation checkpointing,
``group_matcher``, ``reset_classifier``.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from ..errors import UserInputError
from ..validation import check_choice
from .common import check_input, he_init
from .features import FeatureInfo

# The input check runs in a traced graph as one call, instead of the trace branching on a shape.
torch.fx.wrap("check_input")

__all__ = ["ModelBase", "GlobalPool", "ClassifierHead", "POOL_TYPES", "take_indices"]

POOL_TYPES = ("avg", "max", "avgmax", "")


class GlobalPool(nn.Module):
    """Global pooling to an (N, C) vector: ``"avg"``, ``"max"``, ``"avgmax"`` (their mean), or
    ``""`` for none (the map passes through unflattened), as timm's ``SelectAdaptivePool2d``."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        check_choice("global_pool", pool_type, POOL_TYPES)
        self.pool_type = pool_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.pool_type:
            return x
        if self.pool_type == "avg":
            return F.adaptive_avg_pool2d(x, 1).flatten(1)
        if self.pool_type == "max":
            return F.adaptive_max_pool2d(x, 1).flatten(1)
        return 0.5 * (F.adaptive_avg_pool2d(x, 1) + F.adaptive_max_pool2d(x, 1)).flatten(1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"


class ClassifierHead(nn.Module):
    """Pooling, dropout and the classifier as one module, for layouts that nest the classifier
    (timm's VGG: ``head.fc``). Flat layouts keep the same three parts on the model itself."""

    def __init__(self, pool: GlobalPool, drop: nn.Module, fc_name: str, fc: nn.Module) -> None:
        super().__init__()
        self.global_pool = pool
        self.head_drop = drop
        self.fc_name = fc_name
        self.add_module(fc_name, fc)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else getattr(self, self.fc_name)(x)


def take_indices(num_levels: int, indices: int | Sequence[int] | None) -> list[int]:
    """Sorted feature levels for ``indices`` (timm's convention): ``None`` all, an int ``n`` the
    last ``n``, a sequence those levels (negative ones count from the end)."""
    if indices is None:
        return list(range(num_levels))
    if isinstance(indices, int):
        if not 1 <= indices <= num_levels:
            raise UserInputError(f"indices={indices}: an int takes the last n levels, 1 <= n <= {num_levels}")
        return list(range(num_levels - indices, num_levels))
    take = []
    for i in indices:
        if not isinstance(i, int) or not -num_levels <= i < num_levels:
            raise UserInputError(f"indices={tuple(indices)}: each must be an int in [{-num_levels}, {num_levels - 1}]")
        take.append(i % num_levels)
    if not take:
        raise UserInputError("indices=(): name at least one feature level")
    return sorted(set(take))


class ModelBase(nn.Module):
    """What every network of the package shares: a stem, stages run in order, an optional final
    norm, and a pool -> dropout -> linear head; timm's model API on top (docs/backbones.md).

    Attributes set by :meth:`init_layout` / :meth:`init_head`: ``feature_info`` (a
    :class:`~senet.models.features.FeatureInfo`), ``num_classes``, ``num_features`` (channels
    of ``forward_features``' output), ``head_hidden_size`` (width of ``forward_head(pre_logits=True)``).
    """

    classifier_name = "fc"  # the classifier's state_dict key in the family's published layout
    in_chans: int
    feature_info: FeatureInfo

    def __init__(self) -> None:
        super().__init__()
        self.grad_checkpointing = False

    # ----- declared by the family -------------------------------------------------------------

    def init_layout(self, stem: Sequence[str], stages: Sequence[str], feature_info: FeatureInfo,
                    norm: str | None = None) -> None:
        """Declare the forward order: ``stem`` then ``stages`` (dotted submodule names), then the
        ``norm`` module, if any. Every ``feature_info`` module must be one of these steps."""
        self.norm_name = norm
        self.feature_info = FeatureInfo(feature_info)
        steps = list(stem) + list(stages)
        for name in steps + ([norm] if norm else []):
            self.get_submodule(name)  # fail now on a wrong name
        missing = [f["module"] for f in self.feature_info if f["module"] not in steps]
        if missing:
            raise UserInputError(f"{type(self).__name__}: feature_info modules {missing} are not stem or stage steps")
        self._final_step = steps[-1]
        self._set_steps(stem, stages)

    def _set_steps(self, stem: Sequence[str], stages: Sequence[str]) -> None:
        """Record the steps, and the top-level calls ``forward_features`` makes: a container
        whose children are exactly consecutive steps (``blocks.0``, ``blocks.1``, ...) is called
        as a whole, so hooks and cost counting see the same module calls as the layout suggests."""
        self.stem_steps, self.stage_steps = list(stem), list(stages)
        # Stages proper: runs of stage steps, each ending at a feature level (or the last step);
        # the unit of activation checkpointing and of the coarse groups of ``group_matcher``.
        points = {f["module"] for f in self.feature_info}
        self._segments: list[list[str]] = [[]]
        for name in self.stage_steps:
            self._segments[-1].append(name)
            if name in points:
                self._segments.append([])
        self._segments = [seg for seg in self._segments if seg]
        steps, calls, i = self.stem_steps + self.stage_steps, [], 0
        while i < len(steps):
            top = steps[i].split(".", 1)[0]
            container = getattr(self, top)
            children = [f"{top}.{n}" for n, _ in container.named_children()]
            if top != steps[i] and isinstance(container, nn.Sequential) and steps[i:i + len(children)] == children:
                calls.append(top)
                i += len(children)
            else:
                calls.append(steps[i])
                i += 1
        self._calls = calls

    def init_head(self, num_features: int, num_classes: int, drop_rate: float, *, global_pool: str = "avg",
                  pre_logits: nn.Module | None = None, hidden_size: int | None = None) -> None:
        """Global pooling, dropout and the classifier (``classifier_name``) on ``num_features``
        channels; ``pre_logits`` (VGG's fc6/fc7, ``hidden_size`` wide) runs before the pooling."""
        self.num_features = num_features
        self.head_hidden_size = hidden_size if hidden_size is not None else num_features
        if not global_pool and num_classes:
            raise UserInputError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}")
        self.num_classes = num_classes
        self.pre_logits = pre_logits if pre_logits is not None else nn.Identity()
        pool, drop = GlobalPool(global_pool), nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        fc = nn.Linear(self.head_hidden_size, num_classes)
        owner, _, leaf = self.classifier_name.rpartition(".")
        if owner:
            self.add_module(owner, ClassifierHead(pool, drop, leaf, fc))
        else:
            self.global_pool, self.head_drop = pool, drop
            self.add_module(leaf, fc)

    def init_weights(self) -> None:
        """He init of the paper (§5.1), SE blocks left at PyTorch's defaults (see ``he_init``)."""
        he_init(self)

    # ----- the head ---------------------------------------------------------------------------

    def _head_owner(self) -> nn.Module:
        owner = self.classifier_name.rpartition(".")[0]
        return self.get_submodule(owner) if owner else self

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` once removed with ``reset_classifier(0)``)."""
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A fresh classifier for ``num_classes`` outputs; 0 removes it (forward gives the pooled
        features). ``global_pool`` changes the pooling: ``"avg"``, ``"max"``, ``"avgmax"`` or
        ``""`` (none, only with ``num_classes=0``: forward then gives the feature map).

        The model's card (``pretrained_cfg``), if any, is replaced by ``card.with_head(...)``: it
        says ``num_classes`` and no class names (a fresh classifier predicts unnamed classes)."""
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 0:
            raise UserInputError(f"num_classes must be an int >= 0, got {num_classes!r}")
        owner = self._head_owner()
        if global_pool is not None:
            if global_pool == "" and num_classes:
                raise UserInputError(f"global_pool='' (no pooling) needs num_classes=0, got num_classes={num_classes}")
            owner.global_pool = GlobalPool(global_pool)
        elif num_classes and not owner.global_pool.pool_type:
            raise UserInputError(f"num_classes={num_classes} needs a global_pool; this model has none (pass global_pool='avg')")
        self.num_classes = num_classes
        fc = nn.Linear(self.head_hidden_size, num_classes) if num_classes else nn.Identity()
        self.set_submodule(self.classifier_name, fc)
        update = getattr(getattr(self, "pretrained_cfg", None), "with_head", None)
        if update is not None:  # the card follows the head, so card.build() builds this one
            self.pretrained_cfg = self.default_cfg = update(num_classes, global_pool=global_pool)

    # ----- forward ----------------------------------------------------------------------------

    def _run_steps(self, names: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        for name in names:
            x = self.get_submodule(name)(x)
        return x

    def _run_stage(self, names: Sequence[str], x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.compiler.is_compiling():
            return checkpoint(self._run_steps, names, x, use_reentrant=False)
        return self._run_steps(names, x)

    def _norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.get_submodule(self.norm_name)(x) if self.norm_name else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The stem, then every stage in order, then the final norm (if any)."""
        check_input(x, self.in_chans, getattr(self, "min_input_size", 1), type(self).__name__)
        if self.grad_checkpointing:
            x = self._run_steps(self.stem_steps, x)
            for names in self._segments:
                x = self._run_stage(names, x)
        else:
            for name in self._calls:
                x = self.get_submodule(name)(x)
        return self._norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pooling, dropout and the classifier; ``pre_logits=True`` stops before the classifier
        (a ``head_hidden_size``-wide vector)."""
        x = self.pre_logits(x)
        owner = self._head_owner()
        if owner is not self:
            return owner(x, pre_logits=pre_logits)  # one module call, so cost counting sees the head
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """The feature maps of the ``feature_info`` levels ``indices`` (see :func:`take_indices`),
        shallow to deep, and unless ``intermediates_only`` also the final features.

        ``norm=True`` applies the final norm to the last stage's map; ``stop_early`` returns after
        the deepest level taken (the final features are then that level's map).
        """
        if output_fmt != "NCHW":
            raise UserInputError(f"output_fmt={output_fmt!r} is not supported; these networks give 'NCHW' maps")
        take = take_indices(len(self.feature_info), indices)
        wanted = {self.feature_info[i]["module"] for i in take}
        last = self.feature_info[take[-1]]["module"]
        stop = intermediates_only or stop_early
        check_input(x, self.in_chans, getattr(self, "min_input_size", 1), type(self).__name__)
        intermediates: list[torch.Tensor] = []
        # the stem step by step (it may hold a level), then each stage (ending at a level)
        for name, stage in [(n, False) for n in self.stem_steps] + [(seg[-1], seg) for seg in self._segments]:
            x = self._run_stage(stage, x) if stage else self.get_submodule(name)(x)
            if name in wanted:
                intermediates.append(self._norm(x) if norm and name == self._final_step else x)
            if stop and name == last:
                break
        if intermediates_only:
            return intermediates
        if name == self._final_step:
            x = self._norm(x)
        return x, intermediates

    def prune_intermediate_layers(self, indices: int | Sequence[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Replace the steps past the deepest level of ``indices`` by ``nn.Identity`` (their
        weights go), and with ``prune_head`` the classifier head; returns the levels kept.
        The final norm goes with ``prune_norm`` or with the last stage."""
        take = take_indices(len(self.feature_info), indices)
        steps = self.stem_steps + self.stage_steps
        keep = steps.index(self.feature_info[take[-1]]["module"]) + 1
        for name in steps[keep:]:
            self.set_submodule(name, nn.Identity())
        self._set_steps([n for n in self.stem_steps if n in steps[:keep]],
                        [n for n in self.stage_steps if n in steps[:keep]])
        if self.norm_name and (prune_norm or keep < len(steps)):
            self.set_submodule(self.norm_name, nn.Identity())
        if prune_head:
            self.pre_logits = nn.Identity()
            self.reset_classifier(0, "")
        return take

    # ----- training helpers -------------------------------------------------------------------

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of each stage (``torch.utils.checkpoint``, non-reentrant; a
        stage is the run of steps up to the next ``feature_info`` level): its activations are
        recomputed in the backward pass instead of stored; gradients are unchanged."""
        self.grad_checkpointing = bool(enable)

    def group_matcher(self, coarse: bool = False) -> dict[str, str | list[tuple[str, tuple[int]]]]:
        """Regexes on parameter names (timm's format, for layer-wise LR decay): ``stem``; ``blocks``
        as ``(regex, (ordinal,))`` pairs, one per stage (``coarse``) or per block with weights;
        ``head`` (final norm, pre-logits and classifier)."""
        def prefix(names: Sequence[str]) -> str:
            return r"^(?:" + "|".join(re.escape(n) for n in names) + r")\."

        parts: list[list[str]] = []
        for seg in self._segments:
            if coarse:
                parts.append(seg)
                continue
            for name in seg:
                module = self.get_submodule(name)
                children = [n for n, m in module.named_children() if any(True for _ in m.parameters())]
                if isinstance(module, nn.Sequential) and children:
                    parts += [[f"{name}.{c}"] for c in children]
                elif any(True for _ in module.parameters()):
                    parts.append([name])
        blocks = [(prefix(names), (i,)) for i, names in enumerate(parts)]
        head = ["pre_logits", self.classifier_name] + ([self.norm_name] if self.norm_name else [])
        return {"stem": prefix(self.stem_steps), "blocks": blocks, "head": prefix(head)}

    def no_weight_decay(self) -> set[str]:
        """Names of parameters this model wants exempt from weight decay *beyond* the usual rule
        (timm's meaning: an optimiser factory exempts every 1-d parameter and bias itself, and adds
        these, e.g. a transformer's position embedding). These CNNs declare none: an empty set."""
        return set()

    def __prepare_scriptable__(self) -> nn.Module:
        raise RuntimeError(f"{type(self).__name__} does not support TorchScript (deprecated upstream); "
                           "use torch.export.export(model.eval(), (x,)), or senet.export(model, path) for ONNX "
                           "(format='torchscript' writes a traced module)")
