"""Does a dataset fit a trained network? (``senet eval --data OTHER``.)

A trained network's card stores the classes, channels and input size it was trained with. Evaluating it
on data that differs gives a number that means nothing (a CIFAR-10 network "scores" 94.6% error
on Fashion-MNIST: ten classes both, but other classes, one grey channel broadcast to three,
28x28 instead of 32x32). This module names each difference.
"""

from __future__ import annotations

from typing import Any

from ..errors import MismatchError
from ..models.card import ModelCard

__all__ = ["DataMismatch", "checkpoint_data_mismatch"]


class DataMismatch(MismatchError):
    """The data differs from what the checkpoint was trained on in a way that invalidates results."""


def _short(names: Any, n: int = 3) -> str:
    names = list(names)
    return ", ".join(map(str, names[:n])) + (", ..." if len(names) > n else "")


def checkpoint_data_mismatch(card: ModelCard, data: Any) -> tuple[list[str], list[str]]:
    """``(errors, warnings)`` describing how ``data`` differs from what the network of ``card`` was trained on.

    Errors: other class names (labels would mean other things) or another number of image
    channels. Warnings: another image size (the networks accept any size, but the result is
    then for an input size the network was not trained on). Image folders are decoded at the
    checkpoint's size and channels, so only their classes are compared.
    """
    trained_on = card.dataset_name or card.dataset or "its training data"
    errors, warnings = [], []
    classes, expected = list(data.classes), list(card.classes or ())
    if classes != expected:
        errors.append(f"{data.name} has classes ({_short(classes)}) but the checkpoint was trained on "
                      f"{trained_on} ({_short(expected)}), {len(expected)} classes")
    size = getattr(data, "input_size", None)
    if size is not None:
        channels, height, width = size
        want_c, want_h, want_w = card.input_size
        if channels != want_c:
            errors.append(f"{data.name} has {channels}-channel images but the checkpoint expects {want_c} channels")
        if (height, width) != (want_h, want_w):
            warnings.append(f"{data.name} has {height}x{width} images but the checkpoint was trained on "
                            f"{want_h}x{want_w}; the result is for another input size")
    return errors, warnings
