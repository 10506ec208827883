"""Network definitions and the model registry."""

from .registry import ModelSpec, UnknownModelError, create_model, get_model_spec, list_models, register_model
from .resnet import ResNet

__all__ = ["ModelSpec", "ResNet", "UnknownModelError", "create_model", "get_model_spec", "list_models",
           "register_model"]
