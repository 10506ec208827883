"""The model card inside exported files, and exported files run as networks (docs/deploy.md).

:func:`senet.export` writes the network's card (:class:`~senet.models.card.ModelCard`: class
names, mean/std, input size, crop and interpolation) into the file it exports, as one JSON record
with a version, ``{"version": 1, "card": {...}}`` (:func:`card_record`):

* ONNX: the model's ``metadata_props`` entry :data:`CARD_KEY` (ONNX's own place for such data;
  ``onnxruntime.InferenceSession(...).get_modelmeta().custom_metadata_map`` shows it too);
* ``torch.export`` (``.pt2``) and TorchScript (``.pt``): the archive's extra file :data:`CARD_FILE`
  (``torch.export.save(extra_files=...)``, ``torch.jit.save(_extra_files=...)``), stored as
  ``<archive>/extra/senet_card.json``; the INT8 program of ``senet quantize --save`` too.

:func:`read_card` is the one reader; :func:`load_exported` runs such a file as a module that
carries its card, which is how ``senet predict FILE.onnx|FILE.pt2|FILE.pt IMAGES`` gets its labels
and view.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import BadFileError, MissingPathError
from ..models.card import ModelCard, attach_card
from .optional import INT8_OPS, require

__all__ = ["CARD_KEY", "CARD_FILE", "CARD_VERSION", "EXPORTED_SUFFIXES", "card_record", "card_from_record",
           "onnx_with_card", "card_extra_files", "read_card", "load_exported", "is_exported_file", "ExportedNetwork"]

CARD_KEY = "senet.card"  # the ONNX metadata_props key
CARD_FILE = "senet_card.json"  # the extra file of .pt2 / TorchScript archives
CARD_VERSION = 1  # the record's layout; a reader refuses a newer one by name
# Files senet predict runs as exported networks; a ".pt" file only when it is a TorchScript archive
# with a card (".pt" is also the ending of trainer states and of plain torch.save files).
EXPORTED_SUFFIXES = (".onnx", ".pt2")


def card_record(card: ModelCard) -> str:
    """``card`` as the JSON record exported files carry: ``{"version": 1, "card": card.to_dict()}``."""
    return json.dumps({"version": CARD_VERSION, "card": card.to_dict()}, sort_keys=True)


def card_from_record(text: str | bytes, where: str | os.PathLike[str]) -> ModelCard:
    """The card of a record written by :func:`card_record`; :class:`BadFileError` naming ``where``
    when the record is unreadable or of a newer version."""
    try:
        record = json.loads(text)
        version = record["version"]
    except (ValueError, TypeError, KeyError) as e:
        raise BadFileError(f"{where}: its senet model card is unreadable ({e})") from None
    if not isinstance(version, int) or version > CARD_VERSION:
        raise BadFileError(f"{where}: its senet model card has version {version!r}; this senet reads version "
                           f"{CARD_VERSION} (upgrade senet)")
    try:
        return ModelCard.from_dict(record["card"])
    except (ValueError, TypeError, KeyError) as e:
        raise BadFileError(f"{where}: its senet model card is unreadable ({e})") from None


def _require(module: str, why: str) -> Any:
    return require(module, why, "export")


def onnx_with_card(data: bytes, card: ModelCard) -> bytes:
    """The serialised ONNX model ``data`` with ``card`` in its ``metadata_props`` (:data:`CARD_KEY`)."""
    onnx = _require("onnx", "writing the model card into an ONNX file")
    proto = onnx.load_from_string(data)
    kept = [p for p in proto.metadata_props if p.key != CARD_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CARD_KEY, card_record(card)
    return proto.SerializeToString()


def card_extra_files(card: ModelCard) -> dict[str, str]:
    """The extra files that put ``card`` into a ``.pt2`` (``torch.export.save(extra_files=)``) or
    TorchScript (``torch.jit.save(_extra_files=)``) archive."""
    return {CARD_FILE: card_record(card)}


def _no_card(path: Path) -> BadFileError:
    return BadFileError(f"{path} carries no senet model card (class names and input view), so senet cannot tell "
                        f"how to prepare images for it; export it again with senet export (or senet.export), "
                        f"which writes one")


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card an exported file carries: an ONNX file's metadata, a ``.pt2`` or TorchScript
    archive's extra file. :class:`BadFileError` naming the file when it has none (exported by
    another tool, or by an older senet) or is not an ONNX file or archive."""
    path = Path(path)
    if not path.is_file():
        raise MissingPathError(f"no exported model at {path}")
    if path.suffix.lower() == ".onnx":
        onnx = _require("onnx", "reading an ONNX file")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as e:  # onnx raises protobuf's DecodeError and its own types
            raise BadFileError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
        for prop in proto.metadata_props:
            if prop.key == CARD_KEY:
                return card_from_record(prop.value, path)
        raise _no_card(path)
    try:
        with zipfile.ZipFile(path) as archive:
            name = _card_member(archive)
            if name is None:
                raise _no_card(path)
            return card_from_record(archive.read(name), path)
    except zipfile.BadZipFile:
        raise BadFileError(f"{path} is neither an ONNX file nor a torch.export / TorchScript archive") from None


def _card_member(archive: zipfile.ZipFile) -> str | None:
    return next((n for n in archive.namelist() if n.endswith(f"/extra/{CARD_FILE}")), None)


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return _card_member(archive) is not None and any("/code/" in n for n in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_exported_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a file :func:`load_exported` runs: by its ending
    (:data:`EXPORTED_SUFFIXES`), or a ``.pt`` TorchScript archive that carries a card."""
    path = Path(path)
    suffix = path.suffix.lower()
    return suffix in EXPORTED_SUFFIXES or (suffix == ".pt" and path.is_file() and _is_torchscript(path))


def _in_batches(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int | None) -> torch.Tensor:
    # A file exported without dynamic_batch takes exactly `batch` images: feed it chunks of that
    # size, the last one padded with copies of its first image (their outputs are dropped).
    if batch is None or len(x) == batch:
        return run(x)
    outs = []
    for chunk in torch.split(x, batch):
        n = len(chunk)
        if n < batch:
            chunk = torch.cat([chunk, chunk[:1].expand(batch - n, *chunk.shape[1:])])
        outs.append(run(chunk.contiguous())[:n])
    return torch.cat(outs)


class ExportedNetwork(nn.Module):
    """An exported file run as a module: ONNX by ONNX Runtime on the CPU, a ``.pt2`` program as
    ``torch.export.load(...).module()``, TorchScript as ``torch.jit.load`` (both a submodule,
    ``program``, so ``.to(device)`` moves it). A file exported with a fixed batch size is fed in
    chunks of that size, so ``forward`` takes any batch. :func:`load_exported` attaches the file's card."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__()
        self.path = Path(path)
        if self.path.suffix.lower() == ".onnx":
            ort = _require("onnxruntime", "running an ONNX file")
            try:
                session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own types
                raise BadFileError(f"onnxruntime cannot load {path}: {str(e).splitlines()[0]}") from None
            first = session.get_inputs()[0]
            self.batch = first.shape[0] if isinstance(first.shape[0], int) else None
            self._session, self._input = session, first.name
            self.program = None
        elif self.path.suffix.lower() == ".pt":
            self.program = torch.jit.load(str(path), map_location="cpu")
            # A trace records no batch dimension: senet traces at batch 1, or checks two batch
            # sizes with dynamic_batch, so one image at a time runs either.
            self.batch = 1
        else:
            program = _load_program(self.path)
            user = set(program.graph_signature.user_inputs)
            shape = next(n.meta["val"].shape for n in program.graph.nodes if n.op == "placeholder" and n.name in user)
            self.batch = shape[0] if isinstance(shape[0], int) else None
            self.program = program.module()

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.program is not None:
            return self.program(x)
        out = self._session.run(None, {self._input: x.detach().cpu().float().contiguous().numpy()})[0]
        return torch.from_numpy(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _in_batches(self._run, x, self.batch)

    def train(self, mode: bool = True) -> "ExportedNetwork":
        # An exported graph has its mode fixed at export (eval); it cannot switch.
        self.training = False
        return self


def _needs_int8_ops(path: Path) -> bool:
    # The graph of a senet quantize program calls torchao's quantize/dequantize operators, which
    # torch.export.load resolves only once torchao registered them.
    with zipfile.ZipFile(path) as archive:
        return any(b"quantized_decomposed." in archive.read(n) for n in archive.namelist()
                   if n.endswith(".json") and "/models/" in n)


def _load_program(path: Path) -> Any:
    if _needs_int8_ops(path):
        require(INT8_OPS, f"running the INT8 program {path}", "quantize")
    try:
        return torch.export.load(str(path))
    except Exception as e:  # a corrupt or incompatible archive: say which step failed
        raise BadFileError(f"torch.export.load cannot load {path}: {str(e).splitlines()[0]}") from None


def load_exported(path: str | os.PathLike[str]) -> nn.Module:
    """The network of an exported file (ONNX, a ``torch.export`` ``.pt2`` program, TorchScript) as an
    :class:`ExportedNetwork`, with the file's card attached as ``model.pretrained_cfg``
    (:func:`read_card`: a file without a card is refused before anything runs)."""
    card = read_card(path)
    return attach_card(ExportedNetwork(path), card)
