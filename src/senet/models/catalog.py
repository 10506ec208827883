"""Imports every catalogue module so that its models are registered."""

from . import zoo_cifar, zoo_classic, zoo_mobile, zoo_resnet  # noqa: F401
