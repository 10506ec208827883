"""Guarding a run directory: one senet process at a time, and no silent overwrite of a finished run.

:class:`RunLock` holds an OS lock (``flock``) on ``RUN/.senet.lock`` for as long as a run trains in
the directory. The kernel releases it when the process exits or dies, so a killed run never leaves
a stale lock behind, and a second ``senet train --out RUN`` or ``--resume RUN`` started meanwhile is
refused with the holder's pid. A new run into a directory that already holds a run's results is
refused unless ``overwrite=True``, which first removes the old run's files.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from types import TracebackType

__all__ = ["RunDirError", "RunLock", "LOCK_NAME", "prepare_run_dir", "describe_os_error"]

LOCK_NAME = ".senet.lock"
# What a run writes before its first epoch ends: a directory holding only these has nothing to lose.
_SETUP_FILES = {LOCK_NAME, "config.yaml", "env.json"}
# Everything senet train writes into a run directory (what --overwrite removes).
RUN_FILES = ("config.yaml", "env.json", "metrics.csv", "metrics.jsonl", "curves.png", "report.md")


class RunDirError(ValueError):
    """The run directory cannot be used: locked by another process, not empty, or an OS error
    (permission, read-only file system, not a directory, disk full). One line, naming the path."""


def describe_os_error(e: OSError) -> str:
    """``PATH: reason`` for an OS error, in words a user can act on."""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted", errno.ENOTDIR: "a path component is not a directory",
              errno.EEXIST: "exists and is not a directory"}.get(e.errno or 0, e.strerror or str(e))
    return f"{e.filename}: {reason}" if e.filename else reason


class RunLock:
    """Exclusive lock on a run directory (created if needed) for one training process.

    Use as a context manager; raises :class:`RunDirError` if another process holds it, or if the
    directory cannot be created or written.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"run directory {self.run_dir} is an existing file, not a directory")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot use run directory {self.run_dir}: {describe_os_error(e)}") from None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock (Windows): run unguarded
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirError(f"run directory {self.run_dir} is in use by another senet process "
                                  f"(pid {holder})") from None
            raise RunDirError(f"cannot lock run directory {self.run_dir}: {describe_os_error(e)}") from None
        # The pid is only informative (for the message above); the flock is the lock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def prepare_run_dir(run_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> None:
    """Refuse a new run into a directory that holds another run, unless ``overwrite`` (which
    removes that run's files first); a resume keeps everything. Call with the lock held."""
    run_dir = Path(run_dir)
    if resume:
        return
    entries = sorted(p.name for p in run_dir.iterdir() if p.name not in _SETUP_FILES)
    if not entries:
        return
    if not overwrite:
        shown = ", ".join(entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RunDirError(f"run directory {run_dir} is not empty ({shown}); resume it with --resume, "
                          "choose another --out, or pass --overwrite to replace it")
    try:
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        if (run_dir / "checkpoints").is_dir():
            shutil.rmtree(run_dir / "checkpoints")
    except OSError as e:
        raise RunDirError(f"cannot overwrite run directory {run_dir}: {describe_os_error(e)}") from None
