"""Experiments built on ``fit``: paired comparisons, ablation sweeps and their reports."""

from .compare import DEFAULT_MODELS, comparison_sweep
from .report import write_sweep_report
from .stats import Difference, Summary, difference, summarize
from .sweep import Cell, RunRecord, Sweep, cell_config, load_sweep, run_sweep, sweep_from_dict, train_run

__all__ = ["DEFAULT_MODELS", "Cell", "Difference", "RunRecord", "Summary", "Sweep", "cell_config", "comparison_sweep",
           "difference", "load_sweep", "run_sweep", "summarize", "sweep_from_dict", "train_run", "write_sweep_report"]
