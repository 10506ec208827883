"""Imports every catalogue module so that its models are registered."""

from . import zoo_cifar, zoo_resnet  # noqa: F401
