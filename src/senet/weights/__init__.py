"""Weights: key layouts and loading (:mod:`.convert`), the checkpoint file format (:mod:`.checkpoint`) and
published weights (:mod:`.pretrained`)."""

from .convert import SOURCES, LoadReport, WeightLoadError, convert_state_dict, load_weights, read_state_dict

__all__ = ["SOURCES", "LoadReport", "WeightLoadError", "convert_state_dict", "load_weights", "read_state_dict"]
