"""senet: Squeeze-and-Excitation networks (Hu, Shen, Albanie, Sun, Wu; arXiv 1709.01507) in PyTorch.

Public API::

    senet.create_model(name, **overrides)   # any registered network, SE or plain
    senet.list_models(filter="", pretrained=False)  # names, timm's too ("seresnet*"); name.tag with weights
    senet.list_pretrained()                  # every set of published weights as name.tag
    senet.complexity(model, input_size)      # parameters, multiply-adds, SE share (§4)
    senet.load_weights(model, weights, source="timm" | "legacy" | "senet")
    senet.SqueezeExcite, senet.SEConfig      # the SE block (§3) and its options
    senet.retrofit(model, conv_activations=True, init="identity")  # SE into any network (§3.3)
    senet.export(model_or_name_or_checkpoint, path, format="onnx" | "torchscript")  # checked export
    senet.fold_for_inference(model)          # BatchNorm folded into convs, dropout removed
"""

from .cost.counting import Complexity, complexity
from .deploy.export import export
from .deploy.fold import fold_for_inference
from .layers.se import ConstantGate, SEConfig, SqueezeExcite, se_width
from .models.registry import create_model, get_model_spec, list_models, list_pretrained, register_model
from .models.retrofit import RetrofitReport, keras_param_count, retrofit
from .weights.convert import WeightLoadError, load_weights

__version__ = "0.1.0"

__all__ = [
    "Complexity",
    "ConstantGate",
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
    "register_model",
    "retrofit",
    "se_width",
]
