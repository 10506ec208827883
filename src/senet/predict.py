"""Batch prediction's former import path; it lives in :mod:`senet.deploy.predict`."""

from .deploy.predict import *  # noqa: F401,F403
from .deploy.predict import __all__  # noqa: F401
