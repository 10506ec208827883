"""Every file the program writes goes through here: written beside its target under a hidden
temporary name, flushed to disk, then renamed over the target, so that a reader (or a process
killed mid-write) sees either the old file or the whole new one.

* A failed write removes its temporary file and leaves the target as it was; the error is a
  :class:`~senet.errors.WriteError` naming the target (not the temporary file) and what the
  system said in words (disk full, read-only file system, permission denied).
* The free space is checked before writing when the size is known (:func:`check_free_space`).
* Native writers (``torch.jit.save``, ``torch.export.save``, ONNX) serialise into memory, and
  only this module's Python code touches the disk: a C++ library that fails mid-write can abort
  the whole process (a ``c10::Error`` thrown through a destructor), Python raises an ``OSError``.
* :func:`check_writable` says before any work whether a target can be written at all.

Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from pathlib import Path
from typing import Iterator

from .errors import MissingPathError, NotAFileError, UserPathError, WriteError

__all__ = ["atomic_write_bytes", "atomic_path", "check_writable", "check_free_space", "temporary_path",
           "write_error", "REASONS"]

# What the system's refusal means for the user, one phrase each.
REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
           errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
           errno.EPERM: "operation not permitted", errno.EFBIG: "file too large for this file system or limit"}

# Room kept free beyond the bytes to write: one block (the last partial block, the directory entry).
MARGIN = 4096


def temporary_path(path: str | os.PathLike[str], suffix: str | None = None) -> Path:
    """The hidden temporary file beside ``path`` (``dir/.NAME.tmp-PID`` or, with ``suffix``,
    ``dir/.STEM.tmp-PID.SUFFIX`` for readers that insist on an ending such as ``.pt2``); the
    run directory's clean-up and the CLI's messages recognise both forms."""
    path = Path(path)
    if suffix is None:
        return path.with_name(f".{path.name}.tmp-{os.getpid()}")
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{suffix}")


def write_error(path: str | os.PathLike[str], e: OSError) -> WriteError:
    """The one-line :class:`WriteError` for an ``OSError`` met while writing ``path``."""
    reason = REASONS.get(e.errno or 0, e.strerror or str(e))
    return WriteError(f"cannot write {path}: {reason}")  # the OSError stays its __cause__


def check_writable(path: str | os.PathLike[str], create_folder: bool = False) -> Path:
    """Check, before any work, that ``path`` can be written: its folder exists (or, with
    ``create_folder``, is made) and takes new files, and it is not itself a folder. Returns
    ``path`` as a :class:`Path`."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise NotAFileError(f"cannot write {path}: it is a folder; give the file to write")
    if create_folder and not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(path, e) from e
    if not folder.is_dir():
        raise MissingPathError(f"cannot write {path}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        why = "read-only file system" if _read_only(folder) else "permission denied"
        raise UserPathError(f"cannot write {path}: folder {folder} is not writable ({why})")
    if path.exists() and not os.access(path, os.W_OK) and _read_only(folder):
        raise UserPathError(f"cannot write {path}: read-only file system")
    return path


def _read_only(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:  # pragma: no cover - platforms without statvfs
        return False


def check_free_space(path: str | os.PathLike[str], size: int) -> None:
    """Raise :class:`WriteError` if the file system of ``path`` lacks room for ``size`` bytes
    (a file being replaced is counted as freed: the rename releases it)."""
    path = Path(path)
    try:
        free = shutil.disk_usage(path.parent if str(path.parent) else ".").free
        old = path.stat().st_size if path.is_file() else 0
    except OSError:  # cannot tell: the write itself will say
        return
    if size + MARGIN > free + old:
        raise WriteError(f"cannot write {path}: no space left on the device (needs {_mb(size)}, "
                         f"{_mb(free)} free)")


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} kB"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends normally, flush that file to
    disk and rename it over ``path``; when it raises, remove it and leave ``path`` untouched.

    Only Python code should write the temporary file (see the module docstring). An ``OSError``
    from the block or the rename becomes a :class:`WriteError` naming ``path``."""
    path = Path(path)
    tmp = temporary_path(path, suffix)
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if isinstance(e, (WriteError, UserPathError)):
            raise
        raise write_error(path, e) from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, suffix: str | None = None) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one;
    the free space is checked first, and a failure leaves ``path`` as it was (module docstring)."""
    check_free_space(path, len(data))
    with atomic_path(path, suffix) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    # Make the rename itself durable (POSIX: fsync the directory entry).
    try:
        fd = os.open(folder if str(folder) else ".", os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)
