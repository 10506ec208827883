"""What a weights file holds: its key layout and the registered network it belongs to.

Loading the wrong file should fail with one line naming both ("this file holds se_resnet50 weights
(timm layout); the model is se_resnet20") instead of hundreds of key names. Identification builds
each registered network on the ``meta`` device (no memory, no arithmetic) and compares tensor
names and shapes, leaving out the classifier, whose width depends on the dataset.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable, Mapping, Protocol

import torch
from torch import nn

from .convert import convert_state_dict
from .fileformat import read_file_metadata



class Candidate(Protocol):
    """What identification needs of a registered network (``senet.models.registry.ModelSpec``
    has it): its name, the key layout of its published weights, and a way to build it."""

    name: str
    layout: str

    def build(self, **overrides: Any) -> nn.Module: ...


# The registered networks to compare a file with; the caller passes them (``senet.models`` depends
# on this package, not the other way round), lazily, since building them is only needed on a failure.
Candidates = Callable[[], Iterable[Candidate]]

__all__ = ["Candidate", "Candidates", "LAYOUTS", "detect_layout", "file_metadata", "identify", "head_prefix",
           "describe_weights"]

LAYOUTS = ("senet", "timm", "legacy")


def file_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` for any other file)."""
    return read_file_metadata(path)


def detect_layout(sd: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> str:
    """``"senet"`` (a checkpoint of this project: its metadata says so), ``"legacy"`` (the authors'
    Caffe models as ported by Cadene: ``layer0`` stem, ``se_module``, ``last_linear``) or ``"timm"``."""
    if metadata and "senet" in metadata:
        return "senet"
    if any(k.startswith(("layer0.", "last_linear.")) or ".se_module." in k for k in sd):
        return "legacy"
    return "timm"


def head_prefix(model: nn.Module) -> str:
    """The key prefix of ``model``'s classifier: its last ``nn.Linear`` (``""`` if it has none)."""
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name + "."
    return last


def _signature(sd: Mapping[str, Any], head: str) -> frozenset[tuple[str, tuple[int, ...]]]:
    return frozenset((k, tuple(v.shape)) for k, v in sd.items()
                     if not (head and k.startswith(head)) and not k.endswith("num_batches_tracked"))


def identify(sd: Mapping[str, torch.Tensor], candidates: Iterable[Candidate], layout: str | None = None) -> list[str]:
    """The ``candidates`` (registry entries) whose tensors (names and shapes, classifier aside) are
    exactly ``sd``'s, with ``sd`` in ``layout`` (detected when None). Models whose weights use that
    layout come first."""
    layout = layout or detect_layout(sd)
    ours = convert_state_dict(sd, "timm" if layout == "senet" else layout)
    found, layouts = [], {}
    for spec in candidates:
        try:
            with torch.device("meta"):
                model = spec.build()
        except Exception:  # a user's builder that cannot run on the meta device: not a candidate
            continue
        own = model.state_dict()
        head = head_prefix(model)
        if _signature(ours, head) == _signature(own, head):
            found.append(spec.name)
            layouts[spec.name] = spec.layout
    return sorted(found, key=lambda n: layouts[n] != layout)


def describe_weights(sd: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None,
                     candidates: Candidates | None = None) -> str:
    """``"se_resnet50 weights (timm layout)"``, or ``"weights of no registered network (timm layout)"``."""
    layout = detect_layout(sd, metadata)
    if layout == "senet" and metadata:
        try:
            name = json.loads(metadata["senet"]).get("model") or json.loads(metadata["senet"]).get("name")
        except (ValueError, AttributeError):
            name = None
        if name:
            return f"{name} weights (a senet checkpoint)"
    names = identify(sd, candidates(), layout) if candidates is not None else []
    if not names:
        return f"weights of no registered network ({layout} layout, {len(sd)} tensors)"
    also = f" (or {', '.join(names[1:3])})" if len(names) > 1 else ""
    return f"{names[0]}{also} weights ({layout} layout)"
