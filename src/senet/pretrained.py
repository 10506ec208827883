"""The published-weights module's former import path; it lives in :mod:`senet.weights.pretrained`."""

from .weights.pretrained import *  # noqa: F401,F403
from .weights.pretrained import __all__  # noqa: F401
