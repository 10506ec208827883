"""senet: Squeeze-and-Excitation networks (Hu, Shen, Albanie, Sun, Wu; arXiv 1709.01507) in PyTorch.

Public API::

    senet.create_model(name, **overrides)   # any registered network, SE or plain
    senet.list_models(filter="", pretrained=False)  # names, timm's too ("seresnet*"); name.tag with weights
    senet.list_pretrained()                  # every set of published weights as name.tag
    model.pretrained_cfg                     # the model's card (senet.ModelCard): rebuild, classes, preprocessing
    senet.complexity(model, input_size)      # parameters, multiply-adds, SE share (§4)
    senet.load_weights(model, weights, source="timm" | "legacy" | "senet")
    senet.SqueezeExcite, senet.SEConfig      # the SE block (§3) and its options
    senet.retrofit(model, conv_activations=True, init="identity")  # SE into any network (§3.3)
    senet.export(model_or_name_or_checkpoint, path, format="onnx" | "pt2" | "torchscript")  # checked export
    senet.fold_for_inference(model)          # BatchNorm folded into convs, dropout removed
    senet.prepare_for_inference(model, batch_size=1)  # the fastest native CPU path (docs/deploy.md)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. They are imported on first use (PEP 562), so that `import senet`
# and the CLI's start-up (`senet --help`) do not pay for importing torch.
_EXPORTS = {
    "Complexity": "cost.counting", "complexity": "cost.counting",
    "export": "deploy.export",
    "fold_for_inference": "deploy.fold", "prepare_for_inference": "deploy.fast",
    "ConstantGate": "layers.se", "SEConfig": "layers.se", "SqueezeExcite": "layers.se", "se_width": "layers.se",
    "create_model": "factory", "get_model_spec": "models.registry", "list_models": "models.registry",
    "list_pretrained": "models.registry", "register_model": "models.registry", "ModelCard": "models.card",
    "RetrofitReport": "models.retrofit", "keras_param_count": "models.retrofit", "retrofit": "models.retrofit",
    "WeightLoadError": "weights.convert", "load_weights": "weights.convert",
}

if TYPE_CHECKING:
    from .cost.counting import Complexity, complexity
    from .deploy.export import export
    from .deploy.fast import prepare_for_inference
    from .deploy.fold import fold_for_inference
    from .layers.se import ConstantGate, SEConfig, SqueezeExcite, se_width
    from .models.card import ModelCard
    from .factory import create_model
    from .models.registry import get_model_spec, list_models, list_pretrained, register_model
    from .models.retrofit import RetrofitReport, keras_param_count, retrofit
    from .weights.convert import WeightLoadError, load_weights


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:  # a sub-package, e.g. senet.models (imported eagerly before)
        try:
            return importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module 'senet' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "ConstantGate",
    "ModelCard",
    "RetrofitReport",
    "SEConfig",
    "SqueezeExcite",
    "WeightLoadError",
    "complexity",
    "create_model",
    "export",
    "fold_for_inference",
    "get_model_spec",
    "keras_param_count",
    "list_models",
    "list_pretrained",
    "load_weights",
    "prepare_for_inference",
    "register_model",
    "retrofit",
    "se_width",
]
