"""Looking inside trained SE networks (paper §7.2)."""

from .excitations import (
    ExcitationStats,
    GateRecorder,
    fixed_gates,
    gate_removal_study,
    record_excitations,
    se_blocks,
)

__all__ = ["ExcitationStats", "GateRecorder", "fixed_gates", "gate_removal_study", "record_excitations", "se_blocks"]
