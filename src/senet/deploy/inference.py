"""One way to get a network for inference from what a user names: a module, a registered model
name, or a checkpoint (a ``.safetensors`` file written by ``senet train`` or a run directory).

Every network comes back with its :class:`~senet.models.card.ModelCard` (``model.pretrained_cfg``),
which says its input size, class names and evaluation view. Used by :func:`senet.export` and
:func:`senet.deploy.predict.predict_paths`, so both accept the same things.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..errors import UserTypeError
from ..models.card import ModelCard, card_of, default_stats
from ..factory import create_model, load_model
from .exported import is_exported_file, load_exported

__all__ = ["resolve_model", "looks_like_path", "card_or_default"]


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file or folder rather than a registered model."""
    return (os.sep in text or "/" in text or text.endswith((".safetensors", ".pt", ".onnx", ".pt2"))
            or Path(text).exists())


def card_or_default(model: nn.Module) -> ModelCard:
    """``model``'s card; for a module built outside the registry, a card with its class name,
    ``(in_chans, 224, 224)`` input (at least its ``min_input_size``) and ImageNet statistics. Such a
    card describes the input only: :meth:`ModelCard.build` needs a registered name."""
    card = card_of(model)
    if card is not None:
        return card
    c = int(getattr(model, "in_chans", 3))
    side = max(224, int(getattr(model, "min_input_size", 0)))
    mean, std = default_stats(c)
    return ModelCard(name=type(model).__name__, in_chans=c, input_size=(c, side, side), mean=mean, std=std)


def resolve_model(source: nn.Module | str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
                  ) -> nn.Module:
    """The network ``source`` names, in eval mode, its card attached as ``model.pretrained_cfg``.

    A checkpoint's card is the training run's (classes, mean/std, input size); an exported file
    (``.onnx``, ``.pt2``, TorchScript: :func:`senet.deploy.exported.load_exported`) carries its own; a registered name
    gets the card ``create_model`` attaches (with ``pretrained`` weights in ``overrides``: their
    evaluation view and class names); a module is returned as it is (see :func:`card_or_default`).
    ``overrides`` are ``create_model`` keywords and apply to a name only.
    """

    overrides = dict(overrides or {})
    if isinstance(source, nn.Module):
        if overrides:
            raise UserTypeError("model overrides apply to a registered model name, not to a module")
        return source.eval()
    if not isinstance(source, (str, os.PathLike)):
        raise UserTypeError(f"expected a model, a registered model name or a checkpoint path, got {type(source).__name__}")
    text = os.fspath(source)
    if looks_like_path(text):
        if overrides:
            raise UserTypeError("model overrides apply to a registered model name; a checkpoint rebuilds its own model")
        if is_exported_file(text):
            return load_exported(text)  # its card comes from the file; it runs as exported

        return load_model(text)  # FileNotFoundError names a missing checkpoint
    return create_model(text, **overrides).eval()  # an unknown name fails with the closest registered names
