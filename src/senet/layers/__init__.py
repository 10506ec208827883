"""Building blocks shared by every network."""

from .fused_se import set_fused
from .se import ConstantGate, SEConfig, SqueezeExcite, se_width

__all__ = ["ConstantGate", "SEConfig", "SqueezeExcite", "se_width", "set_fused"]
