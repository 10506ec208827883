"""Training: config, optimisers, schedules, metrics, ``fit``, checkpoints and run directories.

    cfg = senet.train.load_config("bundled", ["epochs=5", "optim.lr=0.05"])
    result = senet.train.fit(cfg, "runs/demo")        # -> RunResult(history, final, best, model, ...)
    senet.train.evaluate(result.model, loader)        # -> {"loss", "acc", "top1_err", "top5_err"}
    result.card                                       # the ModelCard, also result.model.pretrained_cfg
"""

from ..factory import load_checkpoint, load_model
from ..weights.checkpoint import CheckpointError, read_checkpoint_meta, save_checkpoint
from .coerce import ConfigError
from .config import DataConfig, ModelConfig, OptimConfig, ScheduleConfig, TrainConfig, config_from_dict, config_to_dict
from .fit import NonFiniteLossError, RunResult, build_model, fit, load_data, resolve_precision, resume_config
from .metrics import evaluate
from .optim import build_optimizer, param_groups
from .overrides import apply_overrides
from .progress import Reporter, TerminalReporter
from .recipes import dump_config, list_recipes, load_config, load_recipe
from .runlock import RunDirError
from .schedule import lr_at

__all__ = [
    "apply_overrides", "build_model", "build_optimizer", "CheckpointError", "config_from_dict",
    "config_to_dict", "ConfigError", "DataConfig", "dump_config", "evaluate", "fit", "list_recipes",
    "load_checkpoint", "load_config", "load_data", "load_model", "load_recipe", "lr_at", "ModelConfig", "NonFiniteLossError",
    "OptimConfig", "param_groups", "read_checkpoint_meta", "Reporter", "resolve_precision", "resume_config",
    "RunDirError", "RunResult", "save_checkpoint", "ScheduleConfig", "TerminalReporter", "TrainConfig",
]
