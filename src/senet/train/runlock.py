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

from ..errors import UserInputError, WriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunDirError", "RunLock", "LOCK_NAME", "prepare_run_dir", "describe_os_error", "remove_stale_temp_files",
           "results_in"]

LOCK_NAME = ".senet.lock"
# Everything senet train writes into a run directory (what --overwrite removes).
RUN_FILES = ("config.yaml", "env.json", "metrics.csv", "metrics.jsonl", "curves.png", "report.md")
# What a run writes before its first checkpoint: a directory holding only these (and an empty
# report, written when the first epoch diverges) has nothing to lose.
_SETUP_FILES = {LOCK_NAME, "config.yaml", "env.json"}
_CHECKPOINT_FILES = ("last_state.pt", "last.safetensors", "best_state.pt", "best.safetensors", "ema.safetensors")


class RunDirError(UserInputError):
    """The run directory cannot be used: locked by another process, not empty, or an OS error
    (permission, read-only file system, not a directory, disk full). One line, naming the path."""


def describe_os_error(e: OSError) -> str:
    """``PATH: reason`` for an OS error, in words a user can act on."""
    reason = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
              errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
              errno.EPERM: "operation not permitted", errno.ENOTDIR: "a path component is not a directory",
              errno.EEXIST: "exists and is not a directory"}.get(e.errno or 0, e.strerror or str(e))
    return f"{e.filename}: {reason}" if e.filename else reason


def _os_failure(what: str, e: OSError) -> Exception:
    """A full disk is the machine's (:class:`WriteError`, exit 1); any other refusal is about the
    path the user chose (:class:`RunDirError`)."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return WriteError(f"{what}: {describe_os_error(e)}")
    return RunDirError(f"{what}: {describe_os_error(e)}")


class RunLock:
    """Exclusive lock on a run directory (created if needed) for one training process.

    Use as a context manager; raises :class:`RunDirError` if another process holds it, or if the
    directory cannot be created or written.
    """

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self._made: list[Path] = []

    def acquire(self) -> "RunLock":
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"run directory {self.run_dir} is an existing file, not a directory")
        made = self._make_dirs()
        try:
            fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self._unmake(made)
            raise _os_failure(f"cannot use run directory {self.run_dir}", e) from None
        if fcntl is None:  # pragma: no cover - no flock (Windows): run unguarded
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
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as e:  # a full disk: nothing of this attempt stays behind
            os.close(fd)
            if made:
                (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
            self._unmake(made)
            raise _os_failure(f"cannot write {self.run_dir / LOCK_NAME}", e) from None
        self._fd = fd
        self._made = made
        return self

    def _make_dirs(self) -> list[Path]:
        """Create the run directory and its missing parents; the ones made, deepest first."""
        made = [p for p in (self.run_dir, *self.run_dir.parents) if not p.exists()]
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            self._unmake(made)
            raise _os_failure(f"cannot use run directory {self.run_dir}", e) from None
        return made

    @staticmethod
    def _unmake(made: list[Path]) -> None:
        for folder in made:  # deepest first; only folders this lock made, and only while empty
            try:
                folder.rmdir()
            except OSError:
                break

    def remove_if_unused(self) -> None:
        """Release the lock and remove the run directory if this lock created it and nothing but
        the lock file was written into it (a command that failed before training leaves no folder)."""
        made = self._made
        self.release()
        if not made or not self.run_dir.is_dir():
            return
        inside = sorted(self.run_dir.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        if any(not p.is_dir() for p in inside if p != self.run_dir / LOCK_NAME):
            return
        (self.run_dir / LOCK_NAME).unlink(missing_ok=True)
        for folder in inside:  # empty folders only, deepest first
            if folder.is_dir():
                folder.rmdir()
        self._unmake(made)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process: alive
        return True
    return True


def remove_stale_temp_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files (``.NAME.tmp-PID``) that killed writes left in ``run_dir`` and
    its ``checkpoints/``; return them. Call with the lock held: the run's own files are written
    only by the lock's holder, so their temporary files are stale whatever their pid; any other
    temporary file is removed only when process PID is gone."""
    run_dir = Path(run_dir)
    ours = set(RUN_FILES) | set(_CHECKPOINT_FILES)
    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for path in folder.glob(".*.tmp-*"):
            name, _, pid = path.name[1:].rpartition(".tmp-")
            if name in ours or (pid.isdigit() and not _pid_alive(int(pid))):
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def _empty_report(path: Path) -> bool:
    """Whether ``report.md`` tabulates no epoch (a run that diverged in its first epoch)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    fences = [i for i, line in enumerate(lines) if line.startswith("```")]
    # The table is the first fenced block: a header and a rule, then one line per epoch.
    return len(fences) >= 2 and fences[1] - fences[0] - 1 <= 2


def results_in(run_dir: str | os.PathLike[str]) -> list[str]:
    """The entries of ``run_dir`` that hold a run's results: everything but the bookkeeping that a
    run writes before its first checkpoint (lock, config, environment, an empty report, an empty
    ``checkpoints/``). Stale temporary files are not results (see :func:`remove_stale_temp_files`)."""
    run_dir = Path(run_dir)
    found = []
    for entry in sorted(run_dir.iterdir()):
        name = entry.name
        if name in _SETUP_FILES or (name == "report.md" and _empty_report(entry)):
            continue
        if name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
            continue
        found.append(name)
    return found


def prepare_run_dir(run_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool) -> None:
    """Refuse a new run into a directory that holds another run's results (:func:`results_in`),
    unless ``overwrite`` (which removes that run's files first); a directory holding only the
    bookkeeping of a run that never checkpointed is reused, its stale temporary files removed. A
    resume keeps everything. Call with the lock held."""
    run_dir = Path(run_dir)
    if resume:
        return
    remove_stale_temp_files(run_dir)
    entries = results_in(run_dir)
    if not entries:
        (run_dir / "report.md").unlink(missing_ok=True)  # the empty report of the run that never checkpointed
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
