"""Checkpoints: model weights in safetensors, trainer state in a ``weights_only`` torch file.

A checkpoint ``TAG`` in ``run/checkpoints`` is a pair:

* ``TAG.safetensors``: the model's state dict, with metadata ``senet`` (JSON: the model card's
  fields, ``ModelCard.to_dict()``, and the epoch) so that ``senet eval`` and ``senet predict``
  rebuild the network from this one file (:func:`senet.factory.load_model`);
* ``TAG_state.pt``: the model weights again, optimiser state, epoch, every RNG state, the
  config and the metric history, made only of tensors and plain Python values so
  ``torch.load(weights_only=True)`` reads it.

Every file is written atomically (:mod:`senet.atomic`: temp file in the same folder, fsync,
rename), so a process killed mid-write leaves the previous file intact. The state file is complete on its own and is
written first; resuming reads only it. A kill between the two writes therefore leaves a
consistent state file one epoch ahead of the ``.safetensors`` file, which resuming rewrites
(``senet.train.reconcile``); no work is lost.

Both files carry a SHA-256 of their content (:func:`content_digest`): the state file under the key
``sha256``, the weights in the safetensors metadata ``senet_sha256``. Readers check it, so a
truncated, overwritten or bit-flipped file is refused with :class:`CheckpointError` (naming the
file and what is wrong) instead of loading altered weights. A file without the hash (written
before it existed, or edited) still loads, with a warning naming it: its content is unverified.
Checkpoints written before the model card (metadata with ``model``/``overrides``/``classes``...)
are read into a card's fields. See docs/models.md, "Checkpoints".

This module is file IO only: it takes and returns the card as data (:data:`CardData`, the
fields of :meth:`senet.models.card.ModelCard.to_dict`) and never imports the networks;
:mod:`senet.factory` turns the data into a card and the card into a network.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import BadFileError, MissingPathError, UserTypeError
from ..published import default_stats
from .fileformat import header_size, safetensors_metadata
from .torchfile import is_pickle, load_torch_bytes, zip_complete

__all__ = [
    "CheckpointError",
    "CheckpointMeta",
    "CardData",
    "content_digest",
    "verify_state",
    "read_weights",
    "read_weights_file",
    "write_checkpoint_files",
    "atomic_write_bytes",
    "save_checkpoint",
    "load_state",
    "read_checkpoint_meta",
    "checkpoint_paths",
    "resolve_checkpoint",
    "UNVERIFIED",
]


_log = logging.getLogger(__name__)

# Key of the content hash: in the state dict, and in the safetensors metadata.
STATE_HASH_KEY = "sha256"
WEIGHTS_HASH_KEY = "senet_sha256"


class CheckpointError(BadFileError):
    """A checkpoint file exists but cannot be trusted: empty, truncated, not a checkpoint, or its
    content does not match the hash recorded when it was written."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path, self.problem = Path(path), problem


def checkpoint_paths(run_dir: str | os.PathLike[str], tag: str) -> tuple[Path, Path]:
    """``(weights, state)`` paths of checkpoint ``tag`` (``last`` or ``best``) in ``run_dir``."""
    d = Path(run_dir) / "checkpoints"
    return d / f"{tag}.safetensors", d / f"{tag}_state.pt"


def _feed(h: Any, obj: Any) -> None:
    # A canonical, type-tagged walk: equal content gives equal bytes whatever the pickle layout.
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        h.update(f"D{len(items)}".encode())
        for k, v in items:
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, (str, bytes)):
        data = obj.encode() if isinstance(obj, str) else obj
        h.update(f"{type(obj).__name__[0]}{len(data)}:".encode() + data)
    elif obj is None or isinstance(obj, (bool, int, float)):
        h.update(f"{type(obj).__name__}:{obj!r};".encode())
    else:
        raise TypeError(f"cannot hash a {type(obj).__name__} in a checkpoint")


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of a checkpoint's content: nested dicts/lists/tuples of tensors and plain values.

    Computed on the values, not on the file's bytes, so that the same weights and state always
    give the same digest and the state file stays a plain ``torch.load``-able dict.
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _weights_digest(tensors: Mapping[str, torch.Tensor], meta_json: str) -> str:
    return content_digest({"tensors": tensors, "senet": meta_json})


# In a state dict loaded by load_state: present (True) when the file carried no content hash.
UNVERIFIED = "unverified"
_FORMAT = 2  # the "senet" metadata holds {"format": 2, "card": ..., "epoch": ..., "top1_err": ...}

# A model card as JSON data: the fields ModelCard.to_dict() gives and ModelCard.from_dict() reads.
CardData = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class CheckpointMeta:
    """What a checkpoint says besides its tensors: the model card as data (``card.to_dict()``;
    ``ModelCard.from_dict(meta.card)`` is the card), the epochs trained and, for ``best``, that
    epoch's top-1 error."""

    card: CardData
    epoch: int | None = None
    top1_err: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.card, Mapping):
            raise UserTypeError(f"CheckpointMeta.card takes the card as data (card.to_dict()), got "
                            f"{type(self.card).__name__}")
        # A copy as JSON gives it (lists, not tuples): a meta written and one read back compare equal.
        object.__setattr__(self, "card", json.loads(json.dumps(self.card)))

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "card": self.card, "epoch": self.epoch, "top1_err": self.top1_err}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "CheckpointMeta":
        """From :meth:`to_dict`, or from the metadata dict of checkpoints written before the card."""
        if "card" in data:
            return cls(data["card"], data.get("epoch"), data.get("top1_err"))
        return cls(_card_from_old(data), data.get("epoch"), data.get("top1_err"))


def _card_from_old(meta: Mapping[str, Any]) -> dict[str, Any]:
    # The dict of older checkpoints: model, overrides, classes, mean, std, input_size, dataset, data, retrofit.
    classes = meta.get("classes")
    size = list(meta.get("input_size") or (3, 224, 224))
    data = meta.get("data") or {}
    overrides = meta.get("overrides") or {}
    mean, std = default_stats(size[0])
    return {
        "name": meta["model"], "overrides": overrides,
        "num_classes": len(classes) if classes else overrides.get("num_classes", 1000),
        "in_chans": size[0], "input_size": size, "mean": meta.get("mean") or list(mean),
        "std": meta.get("std") or list(std), "classes": classes, "weights": "trained",
        "retrofit": meta.get("retrofit") or None,
        "dataset": data.get("dataset"), "data_root": data.get("root"), "dataset_name": meta.get("dataset"),
    }


def write_checkpoint_files(run_dir: str | os.PathLike[str], tag: str, tensors: Mapping[str, torch.Tensor],
                           meta: CheckpointMeta, state: Mapping[str, Any] | None, *,
                           verified: bool = True) -> tuple[Path, Path]:
    """Write checkpoint ``tag`` from CPU ``tensors``: the state file first (when ``state`` is given;
    ``state`` excludes weights and meta), then the weights, each with its content hash.

    ``verified=False`` (content derived from a state that had no hash) writes both files without
    one: a hash computed now would vouch for content nobody checked, and readers would call it
    verified."""
    from safetensors.torch import save

    weights_path, state_path = checkpoint_paths(run_dir, tag)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = dict(tensors)
    record = meta.to_dict()
    if state is not None:
        full = {k: v for k, v in state.items() if k not in (STATE_HASH_KEY, UNVERIFIED)}
        full.update(model=tensors, meta=record)
        if verified:
            full[STATE_HASH_KEY] = content_digest(full)
        buf = io.BytesIO()
        torch.save(full, buf)
        atomic_write_bytes(state_path, buf.getvalue())
    meta_json = json.dumps(record)
    metadata = {"senet": meta_json}
    if verified:
        metadata[WEIGHTS_HASH_KEY] = _weights_digest(tensors, meta_json)
    atomic_write_bytes(weights_path, save(tensors, metadata=metadata))
    return weights_path, state_path


def save_checkpoint(run_dir: str | os.PathLike[str], tag: str, model: nn.Module, meta: CheckpointMeta,
                    state: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write checkpoint ``tag``: weights (+ ``meta`` as JSON metadata) and trainer ``state``.

    The self-contained state file (weights included) is written first, so whichever write a kill
    interrupts, resuming finds a complete, consistent state.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_checkpoint_files(run_dir, tag, tensors, meta, state)


_NOT_SENET = ("is a PyTorch file that is not a senet checkpoint (senet reads the .safetensors files "
              "senet train writes; load other weights with pretrained=FILE)")


def _problem(path: Path, data: bytes, error: BaseException) -> str:
    # Name what is wrong in the words a user can act on; never pass on torch's advice to unpickle.
    if not data:
        return "is empty"
    if data[:4] == b"PK\x03\x04":  # a torch zip archive
        if zip_complete(data):  # it reads, but is not (only) tensors and plain values, or not a state file
            return _NOT_SENET if path.suffix != ".pt" or "Weights only" not in str(error) else (
                "is a PyTorch file holding objects other than tensors and plain values, so it is not a senet "
                "checkpoint (such files are not unpickled: that could run code)")
        return f"is truncated or damaged ({type(error).__name__})"
    if is_pickle(data):
        return ("is a Python pickle (e.g. an old torch.save file), not a senet checkpoint; pickles are not "
                "loaded, since unpickling can run code")
    if header_size(data[:9]) is not None:
        return "is truncated or damaged (its header does not match its size)"
    return "is not a checkpoint (neither a PyTorch archive nor a safetensors file)"


def verify_state(state: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a loaded state dict against its recorded hash; return it without the hash (with
    ``state[UNVERIFIED] = True`` when it had none)."""
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(path, "is not a senet trainer state (no weights or epoch in it)")
    recorded = state.pop(STATE_HASH_KEY, None)
    state.pop(UNVERIFIED, None)
    if recorded is None:
        state[UNVERIFIED] = True
    elif recorded != content_digest(state):
        raise CheckpointError(path, "fails its checksum (the content changed after it was written)")
    return state


def _torch_load(data: bytes) -> Any:
    return load_torch_bytes(data)  # the program's one torch.load (senet.weights.torchfile)


def load_state(run_dir: str | os.PathLike[str], tag: str = "last") -> dict[str, Any]:
    """The trainer state of checkpoint ``tag`` (``weights_only=True``: no arbitrary unpickling),
    checked against its content hash; raises :class:`CheckpointError` on a damaged file. A state
    without a hash is returned with ``state[UNVERIFIED] = True``."""
    state_path = checkpoint_paths(run_dir, tag)[1]
    if not state_path.is_file():
        raise MissingPathError(f"no checkpoint to resume from: {state_path} does not exist")
    data = state_path.read_bytes()
    try:
        state = _torch_load(data)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... on damaged files
        raise CheckpointError(state_path, _problem(state_path, data, e)) from None
    return verify_state(state, state_path)


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """``(tensors, meta)`` of a ``.safetensors`` checkpoint (:func:`read_weights_file`)."""
    return read_weights_file(path)[:2]


def read_weights_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], CheckpointMeta, bool]:
    """``(tensors, meta, verified)`` of a ``.safetensors`` checkpoint, checked against the hash
    recorded at write time (``verified`` is False for a file without one); raises
    :class:`CheckpointError` on a damaged file or one that is not a senet checkpoint."""
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = load(data)
        raw_meta = safetensors_metadata(data)
    except Exception as e:
        raise CheckpointError(path, _problem(path, data, e)) from None
    meta_json = raw_meta.get("senet")
    if meta_json is None:
        raise CheckpointError(path, "has no senet metadata; it is not a checkpoint written by senet train")
    recorded = raw_meta.get(WEIGHTS_HASH_KEY)
    if recorded is not None and recorded != _weights_digest(tensors, meta_json):
        raise CheckpointError(path, "fails its checksum (the content changed after it was written)")
    try:
        meta = CheckpointMeta.from_dict(json.loads(meta_json))
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(path, f"has unreadable senet metadata ({e})") from None
    return tensors, meta, recorded is not None


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A ``.safetensors`` file as given; a run directory means its ``best`` checkpoint (its
    ``last`` one when ``best`` is missing or damaged, which is logged as a warning)."""
    path = Path(path)
    if path.is_dir():
        problems = []
        for tag in ("best", "last"):
            candidate = checkpoint_paths(path, tag)[0]
            if not candidate.is_file():
                continue
            try:
                read_weights(candidate)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            if problems:
                _log.warning("warning: %s; using %s instead", "; ".join(problems), candidate)
            return candidate
        if problems:
            raise CheckpointError(path, "holds no usable checkpoint: " + "; ".join(problems))
        raise MissingPathError(f"{path} holds no checkpoints/best.safetensors or last.safetensors")
    if path.name.endswith("_state.pt"):
        path = path.with_name(path.name[: -len("_state.pt")] + ".safetensors")
    if not path.is_file():
        raise MissingPathError(f"checkpoint not found: {path}")
    return path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> CheckpointMeta:
    """The card and epoch of a checkpoint (a ``.safetensors`` file or a run directory)."""
    return read_weights(resolve_checkpoint(path))[1]
