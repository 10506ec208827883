"""Progress reporting, kept out of ``fit``: fit calls a :class:`Reporter`, which prints or not.

:class:`Reporter` does nothing (the library default). :class:`TerminalReporter` shows a tqdm bar
with the live loss and accuracy on a terminal, and one line per epoch when the output is not a
TTY (logs, CI), then the final table.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Mapping, TextIO

from tqdm import tqdm

from .rundir import format_table

__all__ = ["Reporter", "TerminalReporter"]


class Reporter:
    """Callbacks fit makes on rank 0. Subclass and override what you need."""

    def start(self, info: Mapping[str, Any]) -> None:
        """Before the first epoch: model, dataset, device, epochs, steps per epoch, run directory."""

    def step(self, epoch: int, step: int, steps: int, running: Callable[[], Mapping[str, float]]) -> None:
        """After each training step. ``running()`` returns the epoch's running means so far
        (``loss``, ``acc`` in %, ...); it reads them from the device, a host-device sync, so
        call it only when the display refreshes (:class:`TerminalReporter` does so at most
        every ``mininterval`` seconds), never on every step."""

    def epoch_end(self, metrics: Mapping[str, Any]) -> None:
        """After each epoch's evaluation, with that epoch's row of the metrics table."""

    def message(self, text: str) -> None:
        """A notice (resumed from a checkpoint, weights loaded, ...)."""

    def end(self, history: list[Mapping[str, Any]], summary: str) -> None:
        """After the last epoch."""


class TerminalReporter(Reporter):
    """tqdm bar on a TTY, a line per epoch otherwise; prints the final table."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None, mininterval: float = 0.1) -> None:
        self.stream = stream or sys.stdout
        self.mininterval = mininterval  # seconds between bar refreshes
        self.tty = self.stream.isatty() if tty is None else tty
        self.bar: Any = None
        self.epochs = 0
        self.top5 = True  # top-5 error means something only with more than 5 classes
        self._shown = -float("inf")  # time.monotonic() of the last read of the running means

    def _print(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def start(self, info: Mapping[str, Any]) -> None:
        self.epochs = info["epochs"]
        self.top5 = info.get("classes", 6) > 5
        self._print(f"training {info['model']} ({info['params']:,} parameters) on {info['dataset']}")
        self._print(f"  device {info['device']}, precision {info['precision']}, world size {info['world_size']}, "
                    f"{info['epochs']} epochs x {info['steps']} steps, batch {info['batch_size']}")
        self._print(f"  run directory {info['run_dir']}")

    def step(self, epoch: int, step: int, steps: int, running: Callable[[], Mapping[str, float]]) -> None:
        if not self.tty:
            return
        if self.bar is None:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{self.epochs}", file=self.stream,
                            leave=False, dynamic_ncols=True, mininterval=self.mininterval)
        now = time.monotonic()
        if now - self._shown >= self.mininterval or step == steps - 1:
            self._shown = now
            r = running()
            self.bar.set_postfix(loss=f"{r['loss']:.3f}", acc=f"{r['acc']:.1f}%", refresh=False)
        self.bar.update(1)

    def epoch_end(self, m: Mapping[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._print(f"epoch {m['epoch']:>3d}/{self.epochs}  lr {m['lr']:.2e}  train loss {m['train_loss']:.4f}  "
                    f"train err {m['train_err']:.2f}%  val loss {m['val_loss']:.4f}  top-1 err {m['top1_err']:.2f}%  "
                    + (f"top-5 err {m['top5_err']:.2f}%  " if self.top5 else "")
                    + f"{m['time_s']:.1f}s  {m['images_per_s']:.0f} img/s")

    def message(self, text: str) -> None:
        self._print(text)

    def end(self, history: list[Mapping[str, Any]], summary: str) -> None:
        if history:
            self._print("\n" + format_table(history, top5=self.top5))
        self._print(summary)
