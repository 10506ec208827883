"""``create_model``: a registered network with its weights and its card, as timm's ``create_model``;
``load_model``: the network of a checkpoint.

The registry (:mod:`senet.models.registry`) holds what each name builds; this module adds what a
user asks for on top: published or local weights (:mod:`senet.weights.pretrained`), the model
card (:mod:`senet.models.card`), and ``features_only`` backbones (:mod:`senet.models.features`).
It is where networks and weight files meet, so it sits above both packages: ``senet.models``
never imports ``senet.weights``, and ``senet.weights`` reads and writes the card as data only
(:mod:`senet.weights.checkpoint`), which :func:`checkpoint_card` turns into the card
(CONTRIBUTING.md, "Where things are").
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from .errors import UserTypeError
from .layers.fused_se import set_fused
from .models.card import ModelCard, attach_card, card_for
from .models.features import FeatureBackbone
from .models.registry import get_model_spec, list_models, resolve_name
from .weights.checkpoint import CheckpointError, CheckpointMeta, read_weights_file, resolve_checkpoint
from .weights.convert import load_weights
from .weights.pretrained import load_pretrained

__all__ = ["create_model", "load_model", "load_checkpoint", "LoadedCheckpoint", "checkpoint_card",
           "read_checkpoint_card"]

_log = logging.getLogger(__name__)


def create_model(name: str, *, pretrained: bool | str | os.PathLike[str] = False, features_only: bool = False,
                 out_indices: int | Sequence[int] | None = None, **overrides: Any) -> nn.Module:
    """Build the registered model ``name``; keyword ``overrides`` replace its default arguments.

    SE options can be overridden field by field with an ``se_`` prefix
    (``create_model("se_resnet50", se_reduction=8, se_stages=(1, 2, 3))``), and ``se=None``
    builds the exact plain baseline of any SE model. ``name`` may be timm's name
    (``"seresnet50"``, ``"seresnet50.a1_in1k"``).

    ``pretrained=True`` loads the model's published weights (see :mod:`senet.weights.pretrained`),
    ``pretrained="file"`` a local file in the model's layout. ``num_classes=0`` drops the
    classifier (the model returns pooled features). ``features_only=True`` returns a
    :class:`~senet.models.features.FeatureBackbone` giving the feature maps of the levels
    ``out_indices`` of ``model.feature_info``, as timm: an int ``n`` the last ``n`` levels, a
    sequence those levels (negative ones count from the end); it has the model's own state_dict
    keys and card (docs/backbones.md).

    The knobs timm users pass (docs/models.md): ``drop_rate`` (dropout before the classifier),
    ``global_pool`` (``"avg"``, ``"max"``, ``"avgmax"``, or ``""`` with ``num_classes=0``: the
    feature map) on every family, ``drop_path_rate`` (stochastic depth) on the residual ones.

    ``se_fused=True`` runs every SE block and residual unit of any family on the fused Triton
    kernels where they apply (:mod:`senet.layers.fused_se`); the default is the PyTorch composition.
    """
    fused = overrides.pop("se_fused", None)
    if fused not in (None, True, False):
        raise UserTypeError(f"se_fused must be True, False or None, got {fused!r}")
    spec = get_model_spec(name)
    tag = resolve_name(name)[1]
    headless = overrides.get("num_classes") == 0
    pool = overrides.get("global_pool") if headless else None
    if headless:  # built with its classifier (and a pooling) so that published weights load, then dropped
        overrides = {k: v for k, v in overrides.items() if k not in ("num_classes", "global_pool")}
    if out_indices is not None and not features_only:
        raise UserTypeError("out_indices applies only with features_only=True")
    model = spec.build(**overrides)
    cfg = None
    if pretrained is not False and pretrained is not None:
        cfg = spec.pretrained_config(tag) if pretrained is True or spec.pretrained else None
        load_pretrained(model, spec.name, cfg, pretrained, cfg.source if cfg else spec.layout,
                        candidates=lambda: [get_model_spec(n) for n in list_models()])
    if headless:
        model.reset_classifier(0, pool)
        overrides = {**overrides, "num_classes": 0, **({"global_pool": pool} if pool is not None else {})}
    weights_file = None if pretrained is True or pretrained is False or pretrained is None else os.fspath(pretrained)
    attach_card(model, card_for(spec, model, overrides, cfg, weights_file))
    if fused is not None:
        set_fused(model, fused)
    if features_only:
        return FeatureBackbone(model, out_indices)
    return model


def checkpoint_card(meta: CheckpointMeta, path: str | os.PathLike[str]) -> ModelCard:
    """The card a checkpoint's metadata holds as data (``ModelCard.from_dict(meta.card)``);
    :class:`~senet.weights.checkpoint.CheckpointError` naming ``path`` when it is not a valid card."""
    try:
        return ModelCard.from_dict(meta.card)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"has unreadable senet metadata ({e})") from None


def read_checkpoint_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card of a checkpoint (a ``.safetensors`` file or a run directory), without its network."""
    file = resolve_checkpoint(path)
    return checkpoint_card(read_weights_file(file)[1], file)


@dataclasses.dataclass(frozen=True)
class LoadedCheckpoint:
    """A network rebuilt from a checkpoint: the model (card attached, eval mode), the file read,
    what it says (``meta``, the card as data), its card, and whether its content matched its
    recorded hash."""

    model: nn.Module
    path: Path
    meta: CheckpointMeta
    verified: bool
    card: ModelCard


def load_checkpoint(path: str | os.PathLike[str]) -> LoadedCheckpoint:
    """Rebuild the trained network from a checkpoint alone (a ``.safetensors`` file or a run
    directory): ``card.build()``, then the weights. A file without a content hash loads with a
    warning naming it."""
    file = resolve_checkpoint(path)
    tensors, meta, verified = read_weights_file(file)
    if not verified:
        _log.warning("warning: %s has no content hash (written by an older senet, or edited): "
                     "its weights are not verified", file)
    card = checkpoint_card(meta, file)
    model = card.build()
    load_weights(model, tensors, source="senet")
    card = card.replace(classifier=getattr(model, "classifier_name", card.classifier))
    attach_card(model, card)
    return LoadedCheckpoint(model.eval(), file, meta, verified, card)


def load_model(path: str | os.PathLike[str]) -> nn.Module:
    """The network of a checkpoint (file or run directory) in eval mode, its card attached as
    ``model.pretrained_cfg`` (:func:`load_checkpoint`)."""
    return load_checkpoint(path).model
