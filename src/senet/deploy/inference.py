"""One way to get a network for inference from what a user names: a module, a registered model
name, or a checkpoint (a ``.safetensors`` file written by ``senet train`` or a run directory).

Used by :func:`senet.export` and :func:`senet.deploy.predict.predict_paths`, so both accept the same things.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

from torch import nn

__all__ = ["resolve_model", "looks_like_path"]


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file or folder rather than a registered model."""
    return os.sep in text or "/" in text or text.endswith((".safetensors", ".pt")) or Path(text).exists()


def _labels_of(model: nn.Module) -> list[str] | None:
    # Weights loaded by name may say which label set they predict; the ImageNet-1k names ship
    # with the package where the pretrained-weights module provides them.
    cfg = getattr(model, "pretrained_cfg", None)
    label_set = cfg.get("label_set") if isinstance(cfg, Mapping) else getattr(cfg, "label_set", None)
    if label_set in ("imagenet-1k", "imagenet"):
        try:
            from ..weights.pretrained import imagenet_classes  # type: ignore[attr-defined]
        except ImportError:
            return None
        return list(imagenet_classes())
    return None


def resolve_model(source: nn.Module | str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
                  ) -> tuple[nn.Module, dict[str, Any]]:
    """``(model in eval mode, meta)`` for ``source``.

    ``meta`` holds what inference needs: ``input_size`` (C, H, W), and where known ``classes``,
    ``mean``/``std`` and ``crop_fraction``. A checkpoint gives all of them (its training data's);
    a registered name gives its input size, and class names/statistics when ``overrides`` loads
    weights that carry them (``pretrained=True``); a module gives ``(in_chans, 224, 224)``.
    ``overrides`` are ``create_model`` keywords and apply to a name only.
    """
    from ..data.folder import IMAGENET_MEAN, IMAGENET_STD
    from ..models.registry import create_model, get_model_spec

    overrides = dict(overrides or {})
    if isinstance(source, nn.Module):
        if overrides:
            raise TypeError("model overrides apply to a registered model name, not to a module")
        side = max(224, int(getattr(source, "min_input_size", 0)))
        return source.eval(), {"input_size": (int(getattr(source, "in_chans", 3)), side, side)}
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"expected a model, a registered model name or a checkpoint path, got {type(source).__name__}")
    text = os.fspath(source)
    if looks_like_path(text):
        if overrides:
            raise TypeError("model overrides apply to a registered model name; a checkpoint rebuilds its own model")
        from ..weights.checkpoint import load_model

        model, meta = load_model(text)  # FileNotFoundError names a missing checkpoint
        return model, {**meta, "input_size": tuple(meta["input_size"])}
    spec = get_model_spec(text)  # an unknown name fails with the closest registered names
    model = create_model(text, **overrides).eval()
    size = tuple(spec.input_size)
    if "in_chans" in overrides:
        size = (int(overrides["in_chans"]), *size[1:])
    meta: dict[str, Any] = {"model": text, "input_size": size}
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping):
        for key, ours in (("input_size", "input_size"), ("mean", "mean"), ("std", "std"),
                          ("crop_pct", "crop_fraction")):
            if cfg.get(key) is not None:
                meta[ours] = tuple(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key]
    classes = _labels_of(model)
    if classes is not None:
        meta["classes"] = classes
        meta.setdefault("mean", IMAGENET_MEAN)
        meta.setdefault("std", IMAGENET_STD)
    return model, meta
