"""Batch prediction: the top-k classes of image files, folders (recursive) and globs.

Images are decoded by the decoder image-folder datasets use (:mod:`senet.data.folder`) and
prepared by the network's own evaluation view, :meth:`ModelCard.eval_transform
<senet.models.card.ModelCard.eval_transform>` (the crop, interpolation and mean/std its card
records: the view its training matched, or its published weights'), the same view ``senet eval``
applies, then classified in batches. An image that cannot be read is reported by path and
skipped; the others are still classified.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

from ..data.folder import IMAGE_EXTENSIONS
from ..data.images import decode_image  # the image folders' decoder: one decoding everywhere
from ..errors import MissingPathError, UserInputError
from ..models.card import ModelCard
from ..atomic import atomic_write_bytes
from .exported import ExportedNetwork
from .fast import serving_model
from .inference import card_or_default, looks_like_path, resolve_model

__all__ = ["Prediction", "expand_inputs", "load_image", "predict_paths", "write_predictions", "format_predictions"]

_GLOB_CHARS = set("*?[")


@dataclasses.dataclass(frozen=True)
class Prediction:
    """The ``top`` classes of one image, best first: ``(class index, class name, probability)``."""

    path: str
    top: tuple[tuple[int, str, float], ...]


def expand_inputs(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Files as given, folders searched recursively for image files, globs expanded (``**`` too).

    Order: the order of ``inputs``, each folder or glob sorted; duplicates are kept once. A path
    that does not exist, a glob that matches nothing and a folder without images are errors
    (``FileNotFoundError`` naming them).
    """
    exts = IMAGE_EXTENSIONS
    out: list[Path] = []
    seen: set[Path] = set()

    def add(p: Path) -> None:
        if p not in seen:
            seen.add(p)
            out.append(p)

    def add_folder(folder: Path) -> int:
        found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
        for p in found:
            add(p)
        return len(found)

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            if not add_folder(path):
                raise MissingPathError(f"folder {path} holds no image files ({', '.join(exts)})")
        elif path.is_file():
            add(path)
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                raise MissingPathError(f"no file matches {text}")
            for m in map(Path, matches):
                if m.is_dir():
                    add_folder(m)
                elif m.is_file():
                    add(m)
        else:
            raise MissingPathError(f"no such image file or folder: {path}")
    return out


def load_image(path: str | os.PathLike[str], card: ModelCard) -> torch.Tensor:
    """An image file as the network input ``card`` describes: decoded as image folders decode
    (:mod:`senet.data.folder`), then ``card.eval_transform()``. ``ValueError`` naming the file if
    it is a folder or cannot be decoded."""
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path} is a folder, not an image file")
    if not path.is_file():
        raise MissingPathError(f"image not found: {path}")
    return card.eval_transform()(decode_image(path))


def _load(source: nn.Module | str | os.PathLike[str], overrides: Mapping[str, Any] | None) -> nn.Module:
    overrides = dict(overrides or {})
    if isinstance(source, str) and not looks_like_path(source):
        # A bare name predicts with its published weights; random weights would predict nothing.
        overrides.setdefault("pretrained", True)
        try:
            return resolve_model(source, overrides)
        except TypeError as e:
            if "'pretrained'" not in str(e):
                raise
            raise UserInputError(f"predicting with {source!r} needs its published weights, which this install cannot "
                                 f"load; give a checkpoint (a .safetensors file or a run directory) instead") from None
    return resolve_model(source, overrides)


def predict_paths(source: nn.Module | str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]], *,
                  top_k: int = 5, batch_size: int = 32, device: str | torch.device | None = None,
                  overrides: Mapping[str, Any] | None = None,
                  on_skip: Callable[[Path, str], None] | None = None, fast: bool = True,
                  compile: str | bool = False, backend: str = "native") -> list[Prediction]:
    """Classify every image that ``inputs`` name (see :func:`expand_inputs`) with ``source``: a
    checkpoint, a run directory, a registered name (with its published weights), an exported
    ``.onnx``/``.pt2``/TorchScript file (its card gives the view and class names; it runs as exported, ONNX on
    the CPU by ONNX Runtime) or a module.

    Returns one :class:`Prediction` per readable image, in input order. An unreadable image is
    passed to ``on_skip(path, reason)`` and skipped. Class names come from the network's card (a
    checkpoint's training data, the label set of published weights); otherwise they are indices.
    On the CPU the network runs the fast path (:func:`senet.deploy.fast.serving_model`; ``fast``,
    ``compile`` and ``backend`` as there).
    """
    if not (isinstance(top_k, int) and top_k >= 1):
        raise UserInputError(f"top_k must be a positive integer, got {top_k!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    paths = expand_inputs(inputs)
    model = _load(source, overrides)
    first = next(model.parameters(), None)  # an ONNX file holds none: ONNX Runtime on the CPU
    device = torch.device(device) if device is not None else first.device if first is not None else torch.device("cpu")
    card = card_or_default(model)
    if isinstance(model, ExportedNetwork):  # the file's graph as written: no folding or compiling on top
        if backend != "native":
            raise UserInputError(f"backend={backend!r} applies to a network, not to an exported file, which runs as "
                                 f"written (ONNX files by ONNX Runtime); drop --backend")
        model = model.to(device)
    else:
        model = serving_model(model.to(device), device, min(batch_size, len(paths)) or 1, compile=compile, fast=fast,
                              backend=backend)
    classes = card.classes
    results: list[Prediction] = []
    for start in range(0, len(paths), batch_size):
        batch, kept = [], []
        for p in paths[start:start + batch_size]:
            try:
                batch.append(load_image(p, card))
                kept.append(p)
            except (ValueError, FileNotFoundError) as e:
                if on_skip is not None:
                    on_skip(p, str(e))
        if not batch:
            continue
        with torch.inference_mode():
            probs = model(torch.stack(batch).to(device)).float().softmax(dim=1).cpu()
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for p, vals, idx in zip(kept, values.tolist(), indices.tolist()):
            names = [classes[i] if classes and i < len(classes) else str(i) for i in idx]
            results.append(Prediction(str(p), tuple(zip(idx, names, vals))))
    return results


def format_predictions(predictions: Sequence[Prediction]) -> str:
    """The text ``senet predict`` prints: each path, then one ``probability  class`` line per rank."""
    lines = []
    for pred in predictions:
        lines.append(f"{pred.path}:")
        lines.extend(f"  {100 * p:6.2f}%  {name}" for _, name, p in pred.top)
    return "\n".join(lines)


def write_predictions(predictions: Sequence[Prediction], path: str | os.PathLike[str]) -> Path:
    """Write ``predictions`` as CSV (one row per image and rank) or JSON, chosen by the extension."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = [{"path": p.path, "top": [{"rank": r + 1, "index": i, "class": n, "probability": v}
                                         for r, (i, n, v) in enumerate(p.top)]} for p in predictions]
        text = json.dumps(data, indent=1) + "\n"
    elif suffix == ".csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "rank", "index", "class", "probability"])
        for p in predictions:
            for r, (i, n, v) in enumerate(p.top):
                writer.writerow([p.path, r + 1, i, n, f"{v:.6f}"])
        text = buf.getvalue()
    else:
        raise UserInputError(f"--out {path}: the extension must be .csv or .json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path
