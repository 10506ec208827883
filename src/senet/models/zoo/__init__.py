"""The registered networks. Importing this package registers them (``senet.models`` does so), one module
per group: the ImageNet residual networks, the CIFAR networks, the mobile networks, and VGG, the
Inception family and DenseNet."""

from . import cifar, mobile, residual, vgg_inception_densenet  # noqa: F401
