"""Loading published weights into the project's models.

``source="timm"``: timm / torchvision key names, which are ours already.
``source="legacy"``: the authors' Caffe models as ported by Cadene's ``pretrainedmodels`` and
timm's ``legacy_*`` (``layer0`` stem, ``se_module``, ``last_linear``).
``source="senet"``: this project's own files (a state dict or a training checkpoint).
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Callable, Mapping

import torch
from torch import nn

from ..errors import MismatchError, MissingExtraError, MissingPathError
from ..validation import check_choice
from .fileformat import file_format
from .torchfile import load_torch_bytes, unreadable_reason

__all__ = ["load_weights", "read_state_dict", "convert_state_dict", "WeightLoadError", "LoadReport", "SOURCES"]

StateDict = dict[str, torch.Tensor]


class WeightLoadError(MismatchError):
    """Weights that do not fit a model or a file that holds none. The message is one line; ``report``
    (a :class:`LoadReport`, when keys were compared) lists every missing, unexpected and mis-shaped key."""

    def __init__(self, message: str, report: "LoadReport | None" = None) -> None:
        super().__init__(message)
        self.report = report


def model_label(model: nn.Module) -> str:
    """A model's registered name where its card says it (``model.pretrained_cfg``), else its class."""
    card = getattr(model, "pretrained_cfg", None)
    name = getattr(card, "name", None) or (card.get("name") if isinstance(card, Mapping) else None)
    return str(name) if name else type(model).__name__


@dataclasses.dataclass
class LoadReport:
    """What a load matched: keys the model lacked values for, keys it does not have, and shape clashes."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        """One line: how many keys of each kind, with the first of each."""
        parts = []
        for what, items in (("missing from the weights", self.missing), ("not in the model", self.unexpected),
                            ("of another shape", [k for k, _, _ in self.mismatched])):
            if items:
                parts.append(f"{len(items)} {'key' if len(items) == 1 else 'keys'} {what} (first: {items[0]})")
        return ", ".join(parts)

    def describe(self, limit: int = 20) -> str:
        def block(title: str, items: list[str]) -> str:
            more = f"\n    ... and {len(items) - limit} more" if len(items) > limit else ""
            return f"  {title} ({len(items)}):\n" + "\n".join(f"    {i}" for i in items[:limit]) + more

        parts = []
        if self.missing:
            parts.append(block("missing from the weights", self.missing))
        if self.unexpected:
            parts.append(block("unexpected (not in the model)", self.unexpected))
        if self.mismatched:
            parts.append(block("shape mismatch (weights vs model)",
                               [f"{k}: {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched]))
        return "\n".join(parts)


def _legacy_to_ours(sd: StateDict) -> StateDict:
    """Authors' Caffe layout (Cadene / timm legacy_*) to torchvision/timm names."""
    deep = "layer0.conv3.weight" in sd
    stem = (
        {"conv1": "conv1.0", "bn1": "conv1.1", "conv2": "conv1.3", "bn2": "conv1.4", "conv3": "conv1.6", "bn3": "bn1"}
        if deep else {"conv1": "conv1", "bn1": "bn1"}
    )
    out: StateDict = {}
    for key, value in sd.items():
        m = re.match(r"layer0\.(\w+)\.(.+)", key)
        if m and m.group(1) in stem:
            key = f"{stem[m.group(1)]}.{m.group(2)}"
        key = key.replace(".se_module.", ".se.")
        key = re.sub(r"^last_linear\.", "fc.", key)
        out[key] = value
    return out


SOURCES: dict[str, Callable[[StateDict], StateDict]] = {
    "timm": dict,
    "legacy": _legacy_to_ours,
    "senet": dict,
}


def read_state_dict(path: str | os.PathLike[str]) -> StateDict:
    """Read a state dict from ``.safetensors`` or a ``torch.save`` file (a plain state dict, or a
    checkpoint holding one under ``"model"`` or ``"state_dict"``). Never unpickles arbitrary objects.
    The format is recognised from the file's content, whatever its suffix."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"weights file not found: {path}")
    kind = file_format(path)
    if kind is None:
        raise WeightLoadError(f"{path} is not a PyTorch or safetensors weights file (expected a torch.save "
                              f"archive or a .safetensors file)")
    if kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise MissingExtraError(f"reading {path} needs the 'safetensors' package: pip install safetensors") from e
        try:
            return load_file(str(path))
        except Exception as e:
            raise WeightLoadError(f"{path} is a damaged safetensors file: {str(e).splitlines()[0]}") from None
    data = path.read_bytes()
    try:
        obj = load_torch_bytes(data)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... on unusable files
        raise WeightLoadError(f"{path} {unreadable_reason(data, e)}") from None
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightLoadError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(obj)


def convert_state_dict(sd: Mapping[str, torch.Tensor], source: str) -> StateDict:
    """Rename the keys of a ``source``-layout state dict to this project's names."""
    check_choice("source", source, tuple(SOURCES))
    # Wrappers add prefixes: DistributedDataParallel "module.", torch.compile "_orig_mod.".
    plain = {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in sd.items()}
    return SOURCES[source](plain)


def load_weights(
    model: nn.Module,
    weights: Mapping[str, torch.Tensor] | str | os.PathLike[str],
    source: str = "timm",
    strict: bool = True,
) -> LoadReport:
    """Load ``weights`` (a state dict or a file) from the ``source`` layout into ``model``.

    SE FCs stored as 1x1 convs load into ``fc="linear"`` SE blocks and back (same numbers).
    With ``strict=True`` any missing, unexpected or mis-shaped key raises :class:`WeightLoadError`
    listing them all and nothing is loaded; with ``strict=False`` the matching keys load and the
    report says what did not.
    """
    sd = read_state_dict(weights) if isinstance(weights, (str, os.PathLike)) else dict(weights)
    sd = convert_state_dict(sd, source)
    own = model.state_dict()
    matched: StateDict = {}
    mismatched = []
    for key, value in sd.items():
        if key not in own:
            continue
        target = own[key]
        if value.shape != target.shape:
            # 1x1-conv and Linear forms of a fully connected layer hold the same numbers.
            if value.numel() == target.numel() and value.squeeze().shape == target.squeeze().shape:
                value = value.reshape(target.shape)
            else:
                mismatched.append((key, tuple(value.shape), tuple(target.shape)))
                continue
        matched[key] = value
    report = LoadReport(
        missing=[k for k in own if k not in sd],
        unexpected=[k for k in sd if k not in own],
        mismatched=mismatched,
    )
    if strict and not report.ok:
        raise WeightLoadError(f"the weights do not fit {model_label(model)}: {report.summary()}; nothing was loaded",
                              report)
    model.load_state_dict(matched, strict=False)
    return report
