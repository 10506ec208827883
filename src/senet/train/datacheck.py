"""Moved to :mod:`senet.analysis.datacheck` (serving code checks data without importing training)."""

from ..analysis.datacheck import DataMismatch, checkpoint_data_mismatch

__all__ = ["DataMismatch", "checkpoint_data_mismatch"]
