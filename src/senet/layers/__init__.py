"""Building blocks shared by every network."""

from .se import ConstantGate, SEConfig, SqueezeExcite, se_width

__all__ = ["ConstantGate", "SEConfig", "SqueezeExcite", "se_width"]
