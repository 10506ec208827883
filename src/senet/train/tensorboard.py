"""Optional TensorBoard logging (``TrainConfig.tensorboard``, ``senet train --tensorboard``).

A :class:`~senet.train.progress.Reporter` that writes, once per epoch, the same scalars as
``metrics.csv`` (tag = column name, step = epoch) into ``RUN_DIR/tensorboard``. ``fit`` adds it
on rank 0 only. ``tensorboard`` is an optional extra (``pip install 'senet[tensorboard]'``),
imported only when logging is switched on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import MissingExtraError
from .progress import Reporter
from .rundir import METRIC_COLUMNS

__all__ = ["TensorBoardReporter", "require_tensorboard", "with_tensorboard"]

INSTALL_HINT = "pip install tensorboard (or pip install 'senet[tensorboard]')"


def require_tensorboard() -> Any:
    """torch's ``SummaryWriter`` class, or an ImportError saying how to install what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # an optional extra: only when logging is on
    except ImportError as e:  # torch raises this when the tensorboard package is missing
        raise MissingExtraError(f"tensorboard logging is on (tensorboard: true / --tensorboard) but the "
                                f"'tensorboard' package is not installed: {INSTALL_HINT}") from e
    return SummaryWriter


class TensorBoardReporter(Reporter):
    """Write each epoch's metrics row to TensorBoard event files in ``log_dir``.

    The writer opens at the first epoch with ``purge_step`` = that epoch, so a resumed run
    replaces the events an interrupted attempt wrote past its last checkpoint.
    """

    def __init__(self, log_dir: str | Path) -> None:
        self._writer_class = require_tensorboard()  # fail before training, not after the first epoch
        self.log_dir = Path(log_dir)
        self.writer: Any = None

    def epoch_end(self, metrics: Mapping[str, Any]) -> None:
        epoch = int(metrics["epoch"])
        if self.writer is None:
            self.writer = self._writer_class(log_dir=str(self.log_dir), purge_step=epoch)
        for key in METRIC_COLUMNS:
            if key != "epoch" and key in metrics:
                self.writer.add_scalar(key, float(metrics[key]), global_step=epoch)
        self.writer.flush()  # visible to a running `tensorboard --logdir` after every epoch

    def end(self, history: list[Mapping[str, Any]], summary: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class _Both(Reporter):
    """Forward every :class:`Reporter` callback to two reporters (the terminal and TensorBoard)."""

    def __init__(self, first: Reporter, second: Reporter) -> None:
        self.reporters = (first, second)


def _forward(name: str) -> Any:
    def method(self: _Both, *args: Any, **kwargs: Any) -> Any:
        first, second = self.reporters
        result = getattr(first, name)(*args, **kwargs)
        getattr(second, name)(*args, **kwargs)
        return result  # the primary (terminal) reporter answers any query callback

    method.__name__ = name
    return method


# Every public callback of Reporter, whatever its signature, so new callbacks are forwarded too.
for _name in [n for n, v in vars(Reporter).items() if callable(v) and not n.startswith("_")]:
    setattr(_Both, _name, _forward(_name))


def with_tensorboard(reporter: Reporter, run_dir: str | Path) -> Reporter:
    """``reporter`` plus TensorBoard logging into ``run_dir/tensorboard``."""
    return _Both(reporter, TensorBoardReporter(Path(run_dir) / "tensorboard"))
