"""The allowed values of the training config's fixed-choice fields, in one module that imports
nothing, so that the config schema (:mod:`.config`) and the code that implements each choice
(:mod:`.setup`, :mod:`.optim`, :mod:`.schedule`) both import them from here."""

__all__ = ["PRECISIONS", "COMPILE_MODES", "OPTIMIZERS", "SCHEDULES", "LOSSES"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "lamb", "lars")
SCHEDULES = ("constant", "step", "multistep", "cosine")
LOSSES = ("ce", "bce")
