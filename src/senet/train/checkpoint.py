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
consistent state file one epoch ahead of the ``.safetensors`` file, which the next save
rewrites; no work is lost.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..models.registry import create_model

__all__ = [
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
    except BaseException:
        tmp.unlink(missing_ok=True)
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


def save_checkpoint(run_dir: str | os.PathLike[str], tag: str, model: nn.Module, meta: Mapping[str, Any],
                    state: Mapping[str, Any]) -> tuple[Path, Path]:
    """Write checkpoint ``tag``: weights (+ ``meta`` as JSON metadata) and trainer ``state``.

    The self-contained state file (weights included) is written first, so whichever write a kill
    interrupts, resuming finds a complete, consistent state.
    """
    import io

    from safetensors.torch import save

    weights_path, state_path = checkpoint_paths(run_dir, tag)
    weights_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buf = io.BytesIO()
    torch.save({**state, "model": tensors, "meta": dict(meta)}, buf)
    atomic_write_bytes(state_path, buf.getvalue())
    atomic_write_bytes(weights_path, save(tensors, metadata={"senet": json.dumps(dict(meta))}))
    return weights_path, state_path


def load_state(run_dir: str | os.PathLike[str], tag: str = "last") -> dict[str, Any]:
    """The trainer state of checkpoint ``tag`` (``weights_only=True``: no arbitrary unpickling)."""
    state_path = checkpoint_paths(run_dir, tag)[1]
    if not state_path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {state_path} does not exist")
    return torch.load(state_path, map_location="cpu", weights_only=True)


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A ``.safetensors`` file as given; a run directory means its ``best`` checkpoint."""
    path = Path(path)
    if path.is_dir():
        for tag in ("best", "last"):
            candidate = checkpoint_paths(path, tag)[0]
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"{path} holds no checkpoints/best.safetensors or last.safetensors")
    if path.name.endswith("_state.pt"):
        path = path.with_name(path.name[: -len("_state.pt")] + ".safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def read_checkpoint_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``senet`` metadata of a checkpoint (a ``.safetensors`` file or a run directory)."""
    from safetensors import safe_open

    path = resolve_checkpoint(path)
    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get("senet")
    if meta is None:
        raise ValueError(f"{path} has no senet metadata; it is not a checkpoint written by senet train")
    return json.loads(meta)


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a checkpoint alone; returns ``(model in eval mode, meta)``."""
    from ..weights import load_weights

    path = resolve_checkpoint(path)
    meta = read_checkpoint_meta(path)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["overrides"].items()}
    model = create_model(meta["model"], **overrides)
    if meta.get("retrofit"):  # a network that had SE/BN inserted into it (senet transfer)
        from ..retrofit import retrofit_from_config

        retrofit_from_config(model, meta["retrofit"], meta["input_size"])
    load_weights(model, path, source="senet")
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
