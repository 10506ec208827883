"""Published weights as data, and the constants the networks and the weight files share.

:class:`PretrainedConfig` records one set of published weights: where the file lives, its key
layout and the evaluation setup it was trained for (timm's ``pretrained_cfg`` fields). The
registry lists them per model (:mod:`senet.models.zoo`), :mod:`senet.weights.pretrained` fetches
and loads them, and a model card copies their view and class names. ImageNet's statistics and
class names are here for the same reason. A leaf: it imports nothing from the package, so both
``senet.models`` and ``senet.weights`` can use it without importing each other.
"""

from __future__ import annotations

import dataclasses
from functools import lru_cache
from importlib.resources import files
from typing import Any

__all__ = ["PretrainedConfig", "IMAGENET_MEAN", "IMAGENET_STD", "INCEPTION_MEAN", "INCEPTION_STD", "LABEL_SETS",
           "imagenet_classes", "class_names", "default_stats"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_MEAN = (0.5, 0.5, 0.5)  # TensorFlow-trained models: inputs scaled to [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)
LABEL_SETS = ("imagenet-1k",)


def default_stats(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's mean/std (the paper's data, §5.1) for 3 channels; their averages for other counts."""
    if channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (sum(IMAGENET_MEAN) / 3,) * channels, (sum(IMAGENET_STD) / 3,) * channels


@dataclasses.dataclass(frozen=True)
class PretrainedConfig:
    """One set of published weights for a registered model and the evaluation setup they need.

    ``tag`` is timm's pretrained tag (``"a1_in1k"``), so ``"seresnet50.a1_in1k"`` names it.
    ``source`` is the :mod:`senet.weights` converter for the file's key layout. ``crop_pct``
    is the centre-crop fraction of the evaluation view (paper §5.1: 224 crop of a 256 side,
    0.875). ``drop_keys`` are key prefixes in the file that the model has no place for
    (Inception-v3's auxiliary head).
    """

    tag: str
    source: str = "timm"
    hub_id: str | None = None
    url: str | None = None
    hub_files: tuple[str, ...] = ("model.safetensors", "pytorch_model.bin")
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    labels: str = "imagenet-1k"
    drop_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.hub_id is None) == (self.url is None):
            raise ValueError(f"PretrainedConfig({self.tag!r}) needs exactly one of hub_id and url")

    @property
    def location(self) -> str:
        return self.url or f"https://huggingface.co/{self.hub_id}"

    def cache_name(self) -> str:
        """The file name looked for in :func:`senet.weights.pretrained.weights_dir`: the URL's file name, or
        ``<repo>.safetensors`` for a hub repository (``seresnet50.a1_in1k.safetensors``)."""
        if self.url:
            return self.url.rsplit("/", 1)[-1]
        return f"{self.hub_id.rsplit('/', 1)[-1]}.{self.hub_files[0].rsplit('.', 1)[-1]}"

    def download_url(self) -> str:
        return self.url or f"https://huggingface.co/{self.hub_id}/resolve/main/{self.hub_files[0]}"

    def describe(self) -> dict[str, Any]:
        """Plain-data view (for checkpoint metadata and ``senet predict``)."""
        return dataclasses.asdict(self)


@lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    """The 1000 ImageNet-1k (ILSVRC-2012) class names, in the index order of the published models."""
    text = files("senet").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(names) != 1000:  # pragma: no cover - packaging error
        raise RuntimeError(f"imagenet_classes.txt holds {len(names)} names, not 1000")
    return names


def class_names(labels: str) -> tuple[str, ...]:
    """The class names of a label set named by a :class:`PretrainedConfig` (``"imagenet-1k"``)."""
    if labels != "imagenet-1k":
        raise ValueError(f"unknown label set {labels!r}; known: {', '.join(LABEL_SETS)}")
    return imagenet_classes()

