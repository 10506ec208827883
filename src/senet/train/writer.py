"""Run-directory writes off the training thread: one background thread, in submission order.

``fit`` snapshots what an epoch leaves behind (CPU copies of the weights and optimiser state,
the RNG states, the history) and hands the writes to a :class:`BackgroundWriter`, then trains
on while the files are serialised, fsynced and renamed. The guarantees of the synchronous
version hold: every file is still written atomically (``atomic_write_bytes``), the tasks run one
at a time in the order given (so a checkpoint's state file still precedes its weights, and
epoch k's files precede epoch k+1's), and at most ``max_pending`` tasks wait, so a kill loses at
most the epochs still queued and leaves the newest completed checkpoint resumable. An error in
the thread is raised again in the caller at the next :meth:`submit`, :meth:`flush` or
:meth:`close`; after an error the remaining tasks are dropped, as a synchronous run would have
stopped there.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import torch

__all__ = ["BackgroundWriter", "WeightsSnapshot", "cpu_snapshot"]


def cpu_snapshot(obj: Any) -> Any:
    """A deep copy of ``obj`` with every tensor copied to the CPU, detached.

    Training mutates weights and optimiser buffers in place, so a state dict handed to another
    thread must not share storage with them (on the CPU ``.cpu()`` alone would return the same
    tensor).
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return type(obj)((k, cpu_snapshot(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(cpu_snapshot(v) for v in obj)
    return obj


class WeightsSnapshot:
    """A model's ``state_dict`` copied to the CPU: stands in for the model in ``save_checkpoint``,
    which only calls ``state_dict()``, while the live model trains on."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.tensors = cpu_snapshot(model.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.tensors


class BackgroundWriter:
    """A single worker thread running submitted callables in order (a context manager).

    ``submit`` blocks while ``max_pending`` tasks already wait, which bounds memory (each task
    holds one epoch's snapshot) and how far the files may lag behind training.
    """

    def __init__(self, max_pending: int = 1, name: str = "senet-writer") -> None:
        self._tasks: queue.Queue[Callable[[], Any] | None] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                if task is None:
                    return
                if self._error is None:
                    task()
            except BaseException as e:  # noqa: BLE001 - surfaced in the caller's thread
                self._error = e
            finally:
                self._tasks.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def submit(self, task: Callable[[], Any]) -> None:
        """Queue ``task``; first re-raise any error of an earlier task."""
        self._raise()
        if not self._thread.is_alive():
            raise RuntimeError("the background writer is closed")
        self._tasks.put(task)

    def flush(self) -> None:
        """Wait until every submitted task has run; re-raise the first error."""
        self._tasks.join()
        self._raise()

    def close(self, *, raise_errors: bool = True) -> None:
        """Finish the queued tasks and stop the thread (idempotent). With ``raise_errors=False``
        (the caller is already propagating an exception) a task's error is dropped instead."""
        if self._thread.is_alive():
            self._tasks.put(None)
            self._thread.join()
        if raise_errors:
            self._raise()
        self._error = None

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(raise_errors=exc_type is None)
