"""Checkpoints: model weights in safetensors, trainer state in a ``weights_only`` torch file.

A checkpoint ``TAG`` in ``run/checkpoints`` is a pair:

* ``TAG.safetensors``: the model's state dict, with metadata ``senet`` (JSON: model name,
  overrides, classes, mean/std, input size, dataset, epoch) so that ``senet eval`` and
  ``senet predict`` rebuild the network from this one file;
* ``TAG_state.pt``: the model weights again, optimiser state, epoch, every RNG state, the
  config and the metric history, made only of tensors and plain Python values so
  ``torch.load(weights_only=True)`` reads it.

Every file is written atomically (temp file in the same folder, fsync, rename), so a process
killed mid-write leaves the previous file intact. The state file is complete on its own and is
written first; resuming reads only it. A kill between the two writes therefore leaves a
consistent state file one epoch ahead of the ``.safetensors`` file, which resuming rewrites
(``senet.train.reconcile``); no work is lost.

Both files carry a SHA-256 of their content (:func:`content_digest`): the state file under the key
``sha256``, the weights in the safetensors metadata ``senet_sha256``. Readers check it, so a
truncated, overwritten or bit-flipped file is refused with :class:`CheckpointError` (naming the
file and what is wrong) instead of loading altered weights. Files written before the hash existed
still load, unverified.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import struct
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..models.registry import create_model

__all__ = [
    "CheckpointError",
    "content_digest",
    "verify_state",
    "read_weights",
    "write_checkpoint_files",
    "atomic_write_bytes",
    "save_checkpoint",
    "load_state",
    "read_checkpoint_meta",
    "load_model",
    "capture_rng",
    "restore_rng",
    "checkpoint_paths",
    "resolve_checkpoint",
    "checkpoint_dataset",
]


_log = logging.getLogger(__name__)

# Key of the content hash: in the state dict, and in the safetensors metadata.
STATE_HASH_KEY = "sha256"
WEIGHTS_HASH_KEY = "senet_sha256"


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be trusted: empty, truncated, not a checkpoint, or its
    content does not match the hash recorded when it was written."""

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path, self.problem = Path(path), problem


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            # A full disk fails in write/fsync, whose error names no file: name the one we meant.
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    # Make the rename itself durable (POSIX: fsync the directory entry).
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_paths(run_dir: str | os.PathLike[str], tag: str) -> tuple[Path, Path]:
    """``(weights, state)`` paths of checkpoint ``tag`` (``last`` or ``best``) in ``run_dir``."""
    d = Path(run_dir) / "checkpoints"
    return d / f"{tag}.safetensors", d / f"{tag}_state.pt"


def capture_rng() -> dict[str, Any]:
    """Every RNG state the run touches: torch (CPU and each CUDA device), NumPy, Python."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
        "python": random.getstate(),
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(gauss)))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


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


def write_checkpoint_files(run_dir: str | os.PathLike[str], tag: str, tensors: Mapping[str, torch.Tensor],
                           meta: Mapping[str, Any], state: Mapping[str, Any] | None) -> tuple[Path, Path]:
    """Write checkpoint ``tag`` from CPU ``tensors``: the state file first (when ``state`` is given;
    ``state`` excludes weights and meta), then the weights, each with its content hash."""
    import io

    from safetensors.torch import save

    weights_path, state_path = checkpoint_paths(run_dir, tag)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = dict(tensors)
    if state is not None:
        full = {k: v for k, v in state.items() if k != STATE_HASH_KEY}
        full.update(model=tensors, meta=dict(meta))
        full[STATE_HASH_KEY] = content_digest(full)
        buf = io.BytesIO()
        torch.save(full, buf)
        atomic_write_bytes(state_path, buf.getvalue())
    meta_json = json.dumps(dict(meta))
    digest = _weights_digest(tensors, meta_json)
    atomic_write_bytes(weights_path, save(tensors, metadata={"senet": meta_json, WEIGHTS_HASH_KEY: digest}))
    return weights_path, state_path


def save_checkpoint(run_dir: str | os.PathLike[str], tag: str, model: nn.Module, meta: Mapping[str, Any],
                    state: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write checkpoint ``tag``: weights (+ ``meta`` as JSON metadata) and trainer ``state``.

    The self-contained state file (weights included) is written first, so whichever write a kill
    interrupts, resuming finds a complete, consistent state.
    """
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return write_checkpoint_files(run_dir, tag, tensors, meta, state)


def _problem(path: Path, data: bytes, error: BaseException) -> str:
    # Name what is wrong in the words a user can act on.
    if not data:
        return "is empty"
    if data[:4] == b"PK\x03\x04":  # a torch zip archive that does not read through: cut short or damaged
        return f"is truncated or damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    if path.suffix == ".safetensors" and len(data) >= 8:
        (header,) = struct.unpack("<Q", data[:8])
        if 8 < 8 + header <= 100_000_000 and data[8:9] == b"{":
            return "is truncated or damaged (its header does not match its size)"
    return "is not a checkpoint (neither a PyTorch archive nor a safetensors file)"


def verify_state(state: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a loaded state dict against its recorded hash; return it without the hash."""
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(path, "is not a senet trainer state (no weights or epoch in it)")
    recorded = state.pop(STATE_HASH_KEY, None)
    if recorded is not None and recorded != content_digest(state):
        raise CheckpointError(path, "fails its checksum (the content changed after it was written)")
    return state


def load_state(run_dir: str | os.PathLike[str], tag: str = "last") -> dict[str, Any]:
    """The trainer state of checkpoint ``tag`` (``weights_only=True``: no arbitrary unpickling),
    checked against its content hash; raises :class:`CheckpointError` on a damaged file."""
    import io

    state_path = checkpoint_paths(run_dir, tag)[1]
    if not state_path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {state_path} does not exist")
    data = state_path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError... on damaged files
        raise CheckpointError(state_path, _problem(state_path, data, e)) from None
    return verify_state(state, state_path)


def read_weights(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and ``senet`` metadata of a ``.safetensors`` checkpoint, checked against the
    hash recorded at write time; raises :class:`CheckpointError` on a damaged file."""
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    try:
        tensors = load(data)
        (header,) = struct.unpack("<Q", data[:8])
        raw_meta = json.loads(data[8:8 + header]).get("__metadata__") or {}
    except Exception as e:
        raise CheckpointError(path, _problem(path, data, e)) from None
    meta_json = raw_meta.get("senet")
    if meta_json is None:
        raise CheckpointError(path, "has no senet metadata; it is not a checkpoint written by senet train")
    recorded = raw_meta.get(WEIGHTS_HASH_KEY)
    if recorded is not None and recorded != _weights_digest(tensors, meta_json):
        raise CheckpointError(path, "fails its checksum (the content changed after it was written)")
    try:
        meta = json.loads(meta_json)
    except ValueError:
        raise CheckpointError(path, "has unreadable senet metadata") from None
    return tensors, meta


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
        raise FileNotFoundError(f"{path} holds no checkpoints/best.safetensors or last.safetensors")
    if path.name.endswith("_state.pt"):
        path = path.with_name(path.name[: -len("_state.pt")] + ".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``senet`` metadata of a checkpoint (a ``.safetensors`` file or a run directory)."""
    return read_weights(resolve_checkpoint(path))[1]


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint alone; returns ``(model in eval mode, meta)``."""
    from .convert import load_weights

    tensors, meta = read_weights(resolve_checkpoint(path))
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["overrides"].items()}
    model = create_model(meta["model"], **overrides)
    if meta.get("retrofit"):  # a network that had SE/BN inserted into it (senet transfer)
        from ..models.retrofit import retrofit_from_config

        retrofit_from_config(model, meta["retrofit"], meta["input_size"])
    load_weights(model, tensors, source="senet")
    return model.eval(), meta


def checkpoint_dataset(meta: Mapping[str, Any], spec: str | None = None, split: str = "test",
                       root: str | None = None) -> Any:
    """The dataset to evaluate or analyse a checkpoint on: ``spec`` (default: the one it was trained
    on), normalised with the training statistics stored in the checkpoint, and with as many
    classes as the network has."""
    from ..data import load_dataset

    spec = spec or meta["data"]["dataset"]
    root = root if root is not None else meta["data"].get("root")
    data = load_dataset(spec, split, root=root, image_size=meta["input_size"][1])
    if len(data.classes) != len(meta["classes"]):
        raise ValueError(f"{data.name} has {len(data.classes)} classes but the checkpoint was trained on "
                         f"{len(meta['classes'])}")
    data.mean, data.std = tuple(meta["mean"]), tuple(meta["std"])
    return data
