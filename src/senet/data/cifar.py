"""CIFAR-10 and CIFAR-100 from the official python archives (Krizhevsky, 2009).

A copy is found, in order, as: ``root`` itself being the ``.tar.gz`` archive or its extracted
folder; the extracted folder inside ``root``; the archive inside ``root``. Archives are read
in place (no extraction step that could be left half done). With ``download=True`` and no
copy, the archive is fetched into ``root``: streamed to a temporary file beside it, its MD5
checked, and only then renamed into place, so an interrupted or corrupted download never
looks complete. The URL and checksum can be overridden per call or by the environment
variables ``SENET_CIFAR10_URL`` / ``SENET_CIFAR10_MD5`` (``SENET_CIFAR100_*``) for mirrors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import io
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

import numpy as np
import torch

from ..errors import BadFileError, MissingPathError, UserInputError
from .arrays import ArrayDataset, channel_stats

__all__ = ["CIFAR", "CifarSource", "DatasetNotFoundError", "ChecksumError", "load_cifar", "download_archive",
           "default_root"]


class DatasetNotFoundError(MissingPathError):
    """No local copy of a dataset, and it could not (or may not) be downloaded."""


class ChecksumError(BadFileError):
    """A downloaded file whose MD5 differs from the expected one (it is deleted)."""


@dataclasses.dataclass(frozen=True)
class CifarSource:
    title: str
    archive: str  # file name of the official archive
    url: str
    md5: str
    folder: str  # the folder the archive unpacks to
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: bytes
    names_key: bytes
    env: str  # prefix of the override variables

    def resolved_url(self, url: str | None) -> str:
        return url or os.environ.get(f"{self.env}_URL") or self.url

    def resolved_md5(self, md5: str | None) -> str:
        return (md5 or os.environ.get(f"{self.env}_MD5") or self.md5).lower()


CIFAR: dict[str, CifarSource] = {
    "cifar10": CifarSource(
        "CIFAR-10", "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        "c58f30108f718f92721af3b95e74349a", "cifar-10-batches-py",
        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta",
        b"labels", b"label_names", "SENET_CIFAR10",
    ),
    "cifar100": CifarSource(
        "CIFAR-100", "cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        "eb9058c3a382ffc7106e4002c42a8d85", "cifar-100-python", ("train",), ("test",), "meta",
        b"fine_labels", b"fine_label_names", "SENET_CIFAR100",
    ),
}


def default_root() -> Path:
    """Where datasets are looked for and downloaded to: ``$SENET_DATA_DIR`` or ``~/.cache/senet/data``."""
    return Path(os.environ.get("SENET_DATA_DIR") or Path.home() / ".cache" / "senet" / "data").expanduser()


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists, bytes and numpy arrays) and nothing else:
    a pickle can run arbitrary code, and an archive may come from anywhere."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"),
                # Protocol-2 pickles written by Python 3 wrap raw bytes as _codecs.encode(str, "latin1").
                ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR batch")
        if module == "numpy.core.multiarray":  # old pickles; numpy >= 2 moved it (and warns on the old name)
            module = "numpy._core.multiarray" if hasattr(np, "_core") else module
        return super().find_class(module, name)


def _unpickle(stream: IO[bytes], where: str) -> dict:
    try:
        obj = _ArrayUnpickler(stream, encoding="bytes").load()
    except Exception as e:  # any malformed pickle: name the file rather than show pickle internals
        raise UserInputError(f"{where} is not a CIFAR python batch: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise UserInputError(f"{where} is not a CIFAR python batch (expected a dict, got {type(obj).__name__})")
    return obj


def _read_members(source: CifarSource, location: Path, names: list[str]) -> dict[str, dict]:
    """The unpickled files ``names`` of the extracted folder or archive at ``location``."""
    if location.is_dir():
        out = {}
        for name in names:
            path = location / name
            if not path.is_file():
                raise DatasetNotFoundError(f"{source.title} folder {location} lacks {name}")
            with path.open("rb") as f:
                out[name] = _unpickle(f, str(path))
        return out
    found: dict[str, dict] = {}
    try:
        with tarfile.open(location, "r:gz") as tar:
            for member in tar:
                base = member.name.rsplit("/", 1)[-1]
                if member.isfile() and base in names and base not in found:
                    found[base] = _unpickle(io.BytesIO(tar.extractfile(member).read()), f"{location}:{member.name}")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise UserInputError(f"{location} is not a readable {source.archive} archive: {e}") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise UserInputError(f"{location} is not a {source.title} python archive: it lacks {', '.join(missing)}")
    return found


def _batch_arrays(batch: dict, source: CifarSource, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[source.label_key], dtype=np.int64)
    except KeyError as e:
        raise UserInputError(f"{where}: CIFAR batch lacks the key {e.args[0]!r}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserInputError(f"{where}: expected (N, 3072) pixels and N labels, got {data.shape} and {len(labels)}")
    # Each row is the red plane, then green, then blue, each 32x32 row-major: (N, 3, 32, 32).
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def find_local(source: CifarSource, root: Path) -> Path | None:
    """The extracted folder or archive holding ``source`` at or under ``root``, if any."""
    if root.is_file():
        return root
    candidates = [root if (root / source.meta_file).is_file() else None, root / source.folder, root / source.archive]
    for path in candidates:
        if path is not None and (path.is_dir() if path.suffix != ".gz" else path.is_file()):
            return path
    return None


def download_archive(url: str, dest: Path, md5: str, *, timeout: float = 60.0) -> Path:
    """Fetch ``url`` to ``dest`` atomically, checking its MD5; return ``dest``.

    Bytes stream to a temporary ``.part`` file in ``dest``'s folder, renamed to ``dest`` only once
    complete and verified; on any failure it is removed. Network failures raise
    :class:`DatasetNotFoundError`, a wrong checksum :class:`ChecksumError`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    digest = hashlib.md5()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as response:
                    expected = response.headers.get("Content-Length")
                    received = 0
                    while chunk := response.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
                        received += len(chunk)
                    # http.client ends a short body quietly; a dropped connection must not pass as done.
                    if expected is not None and received != int(expected):
                        raise http.client.IncompleteRead(b"", int(expected) - received)
            except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                reason = getattr(e, "reason", None) or f"{type(e).__name__}: {e}"
                raise DatasetNotFoundError(
                    f"could not download {url}: {reason}. Without network access, fetch {dest.name} elsewhere "
                    f"and put it at {dest}"
                ) from None
        if digest.hexdigest() != md5.lower():
            raise ChecksumError(f"{url} has MD5 {digest.hexdigest()}, expected {md5}; the download was discarded")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def load_cifar(
    key: str,
    split: str,
    *,
    root: str | Path | None = None,
    download: bool = False,
    url: str | None = None,
    md5: str | None = None,
) -> ArrayDataset:
    """One split of CIFAR-10 (``key="cifar10"``) or CIFAR-100 (``"cifar100"``, fine labels).

    ``root``: the archive, its extracted folder, or a folder holding either (default
    :func:`default_root`). Mean/std come from the train split for both splits.
    """
    source = CIFAR[key]
    base = Path(root).expanduser() if root is not None else default_root()
    location = find_local(source, base)
    if location is None:
        url, md5 = source.resolved_url(url), source.resolved_md5(md5)
        if not download:
            raise DatasetNotFoundError(
                f"{source.title} not found under {base}. Put {source.archive} (from {url}, MD5 {md5}) or its "
                f"extracted {source.folder}/ folder there, pass root=<archive or folder>, or download=True "
                f"(senet train: --set data.download=true) when online"
            )
        # root names the archive itself (".../cifar-10-python.tar.gz") or the folder to hold it.
        dest = base if base.name.endswith((".tar.gz", ".tgz")) else base / source.archive
        if dest.parent.exists() and not dest.parent.is_dir():
            raise DatasetNotFoundError(f"cannot download {source.title} into {dest.parent}: it is not a folder")
        location = download_archive(url, dest, md5)
    # One pass over the archive reads everything: the train split is needed for the statistics
    # and the test split for the name, whichever split is asked for.
    files = _read_members(source, location, [*source.train_files, *source.test_files, source.meta_file])
    where = str(location)
    train = [_batch_arrays(files[n], source, f"{where}:{n}") for n in source.train_files]
    test = [_batch_arrays(files[n], source, f"{where}:{n}") for n in source.test_files]
    x_train = torch.cat([x for x, _ in train])
    n_test = sum(len(y) for _, y in test)
    chosen = train if split == "train" else test
    x, y = torch.cat([x for x, _ in chosen]), torch.cat([y for _, y in chosen])
    names = files[source.meta_file].get(source.names_key)
    if names is None:
        raise UserInputError(f"{where}:{source.meta_file} lacks {source.names_key!r}")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    mean, std = channel_stats(x_train)
    name = f"{source.title} ({len(x_train):,} train / {n_test:,} test)"
    return ArrayDataset(x, y, classes, name, mean, std)

