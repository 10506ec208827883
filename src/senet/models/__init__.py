"""Network definitions, the model registry and the model card (``create_model``, which adds
published weights, is :func:`senet.create_model`, in :mod:`senet.factory`).

Importing the package registers every network of :mod:`.zoo`, so the registry is complete
whichever of its modules a caller imports first.
"""

from .registry import (ModelSpec, UnknownModelError, get_model_spec, list_models, list_pretrained, register_model,
                       unregister_model)
from .resnet import ResNet
from . import zoo  # noqa: E402,F401  (registers the networks; after the registry it fills)

__all__ = ["ModelSpec", "ResNet", "UnknownModelError", "get_model_spec", "list_models",
           "list_pretrained", "register_model", "unregister_model"]
