"""The model card: one frozen record that travels with a network (docs/models.md).

Every model that :func:`~senet.factory.create_model` builds carries a :class:`ModelCard`
as ``model.pretrained_cfg`` (``model.default_cfg`` is the same object, timm's names). It says
how to rebuild the network (registered name, overrides, retrofit), what it predicts (class
names where known) and how to prepare its input (size, mean/std, crop fraction and mode,
interpolation: timm's data config). Training writes the evaluation view that matches its own
augmentation, checkpoints carry it as JSON, and eval, predict, export and the analysis tools read
it; :meth:`ModelCard.eval_transform` is the one evaluation view (paper §5.1), built from the card
alone.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from torch import nn

from ..errors import UserInputError
from ..layers.se import SEConfig
from ..published import IMAGENET_MEAN, IMAGENET_STD, class_names, default_stats

from .features import FeatureBackbone
from .registry import ModelSpec, get_model_spec
from .retrofit import retrofit_from_config

if TYPE_CHECKING:  # pragma: no cover
    from ..data.transforms import EvalView
    from ..published import PretrainedConfig

__all__ = ["ModelCard", "RetrofitSpec", "FrozenMapping", "WEIGHT_SOURCES", "INTERPOLATIONS", "CROP_MODES",
           "attach_card", "card_of", "card_for", "default_stats", "legacy_view"]

# Where the weights came from: initialisation, published weights (by tag), a local file, a training run.
WEIGHT_SOURCES = ("random", "published", "file", "trained")
# The values senet.data.transforms.EvalView takes (timm's crop modes), repeated here so that
# building a model does not load the data stack; a test checks that the two agree.
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
CROP_MODES = ("center", "squash", "border")
_SE_TAG = "SEConfig"  # how an SEConfig override is written in JSON


class FrozenMapping(Mapping[str, Any]):
    """An immutable, hashable ``str -> value`` mapping (values frozen too: lists become tuples)."""

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        self._data = {str(k): _freeze(v) for k, v in (data or {}).items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._data.items())))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __reduce__(self) -> tuple[Any, ...]:  # copy/deepcopy/pickle rebuild it through __init__
        return FrozenMapping, (self._data,)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping) and not isinstance(value, FrozenMapping):
        return FrozenMapping(value)
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _plain(value: Any, where: str) -> Any:
    """``value`` as JSON data: tuples to lists, an SEConfig to a tagged mapping; else a ValueError naming ``where``."""
    if isinstance(value, SEConfig):
        return {_SE_TAG: _plain(dataclasses.asdict(value), where)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise UserInputError(f"{where} = {value!r} cannot be written to a model card (JSON values and SEConfig only)")


def _unplain(value: Any) -> Any:
    """The inverse of :func:`_plain` for create_model overrides: lists to tuples, SEConfig back."""
    if isinstance(value, Mapping):
        if set(value) == {_SE_TAG}:
            return SEConfig(**{k: _unplain(v) for k, v in value[_SE_TAG].items()})
        return FrozenMapping({k: _unplain(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_unplain(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class RetrofitSpec:
    """SE (and/or BN) blocks inserted into a trained network (:func:`senet.retrofit`, the
    transfer-learning study of docs/results.md). ``types`` are ``torch.nn`` class names; ``se``
    holds :class:`SEConfig` fields (empty: the defaults) or is ``None`` for BN only."""

    types: tuple[str, ...] | None = None
    names: str | None = None
    regex: str | None = None
    conv_activations: bool = False
    depthwise: bool = True
    se: FrozenMapping | None = FrozenMapping()
    bn: bool = False
    init: str = "default"

    @classmethod
    def from_mapping(cls, spec: Mapping[str, Any]) -> "RetrofitSpec":
        """From a config's ``model.retrofit`` mapping; unknown keys fail naming them."""
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in spec if k not in known]
        if unknown:
            raise UserInputError(f"model.retrofit: unknown key(s) {unknown}; allowed: {', '.join(known)}")
        kw = dict(spec)
        if isinstance(kw.get("types"), str):
            kw["types"] = (kw["types"],)
        elif kw.get("types") is not None:
            kw["types"] = tuple(kw["types"])
        if kw.get("se", {}) is not None:
            if not isinstance(kw.get("se", {}), Mapping):
                raise UserInputError(f"model.retrofit.se must be a mapping of SE options or null, got {kw['se']!r}")
            kw["se"] = FrozenMapping(kw.get("se", {}))
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        """The mapping :func:`senet.models.retrofit.retrofit_from_config` takes (JSON data)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out = {k: v for k, v in out.items() if not (k in ("types", "names", "regex") and v is None)}
        return _plain(out, "retrofit")


# timm's pretrained_cfg keys -> card fields (timm's data config reads these).
_TIMM_KEYS = {"architecture": "name", "tag": "weights_tag", "hf_hub_id": "hub_id", "label_names": "classes"}


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """How to rebuild, feed and read a network (docs/models.md, "The model card").

    ``name``/``overrides``: the registered model and its ``create_model`` keywords; ``retrofit``:
    blocks inserted afterwards. ``input_size`` (C, H, W), ``mean``/``std``, ``crop_pct``,
    ``crop_mode`` and ``interpolation`` are the evaluation view, with timm's meanings
    (:class:`senet.data.transforms.EvalView`; paper §5.1: a 224 crop of a 256 side, 0.875;
    ``crop_mode="squash"`` at ``crop_pct=1.0``: the whole image, as CIFAR networks train).
    ``classes``: the class names in logit order, or ``None`` where unknown (random weights).
    ``weights``: one of :data:`WEIGHT_SOURCES`, with ``weights_tag`` (timm's pretrained tag, a
    file name) and ``hub_id``/``url`` for published weights. ``dataset``/``data_root``: what a
    trained run was trained on (a ``senet.data.load_dataset`` spec), ``dataset_name`` for display.
    ``features_only``/``out_indices``: the network is a feature backbone giving those levels
    (:class:`~senet.models.features.FeatureBackbone`, as ``create_model(features_only=True)``).

    Reads like timm's ``pretrained_cfg`` too: ``card["mean"]``, ``card.get("crop_pct")``.
    """

    name: str
    overrides: FrozenMapping = FrozenMapping()
    num_classes: int = 1000
    in_chans: int = 3
    input_size: tuple[int, int, int] = (3, 224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crop_pct: float = 0.875
    crop_mode: str = "center"
    interpolation: str = "bilinear"
    classes: tuple[str, ...] | None = None
    classifier: str = "fc"
    weights: str = "random"
    weights_tag: str | None = None
    hub_id: str | None = None
    url: str | None = None
    retrofit: RetrofitSpec | None = None
    dataset: str | None = None
    data_root: str | None = None
    dataset_name: str | None = None
    features_only: bool = False
    out_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        set_ = functools.partial(object.__setattr__, self)
        if not isinstance(self.overrides, FrozenMapping):
            set_("overrides", FrozenMapping(self.overrides))
        set_("input_size", tuple(int(s) for s in self.input_size))
        set_("mean", tuple(float(m) for m in self.mean))
        set_("std", tuple(float(s) for s in self.std))
        if self.classes is not None:
            set_("classes", tuple(str(c) for c in self.classes))
        if isinstance(self.retrofit, Mapping):
            set_("retrofit", RetrofitSpec.from_mapping(self.retrofit))
        if self.out_indices is not None:
            set_("out_indices", tuple(int(i) for i in self.out_indices))
        if self.features_only != (self.out_indices is not None):
            raise UserInputError("ModelCard: features_only and out_indices go together (a backbone's levels), got "
                                 f"features_only={self.features_only}, out_indices={self.out_indices}")
        if len(self.input_size) != 3 or min(self.input_size) < 1:
            raise UserInputError(f"ModelCard.input_size must be (C, H, W) with positive entries, got {self.input_size}")
        c = self.input_size[0]
        if len(self.mean) != c or len(self.std) != c:
            raise UserInputError(f"ModelCard.mean/std need {c} values (one per input channel), got "
                                 f"{len(self.mean)}/{len(self.std)}")
        if not 0 < self.crop_pct <= 1:
            raise UserInputError(f"ModelCard.crop_pct must lie in (0, 1], got {self.crop_pct}")
        if self.crop_mode not in CROP_MODES:
            raise UserInputError(f"ModelCard.crop_mode must be one of {', '.join(CROP_MODES)}, got {self.crop_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise UserInputError(f"ModelCard.interpolation must be one of {', '.join(INTERPOLATIONS)}, "
                                 f"got {self.interpolation!r}")
        if self.weights not in WEIGHT_SOURCES:
            raise UserInputError(f"ModelCard.weights must be one of {', '.join(WEIGHT_SOURCES)}, got {self.weights!r}")

    # ---- timm-style read access ----
    def __getitem__(self, key: str) -> Any:
        field = _TIMM_KEYS.get(key, key)
        if field not in self._field_names():
            raise KeyError(key)
        return getattr(self, field)

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and _TIMM_KEYS.get(key, key) in self._field_names()

    def keys(self) -> list[str]:
        return [*self._field_names(), *_TIMM_KEYS]

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "ModelCard":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        """JSON data; :meth:`from_dict` reads it back to an equal card."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["retrofit"] = self.retrofit.to_dict() if self.retrofit is not None else None
        return _plain(out, "card")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ModelCard":
        """The card written by :meth:`to_dict`; unknown keys fail naming them. A card written
        before cards recorded ``crop_mode`` gets the view its training pipeline matches
        (:func:`legacy_view`)."""
        known = cls._field_names()
        unknown = [k for k in data if k not in known]
        if unknown:
            raise UserInputError(f"model card: unknown key(s) {unknown}")
        kw = dict(data)
        if "crop_mode" not in kw:
            kw.update(legacy_view(kw))
        kw["overrides"] = FrozenMapping({k: _unplain(v) for k, v in (kw.get("overrides") or {}).items()})
        if kw.get("retrofit") is not None:
            kw["retrofit"] = RetrofitSpec.from_mapping(kw["retrofit"])
        return cls(**kw)

    # ---- use ----
    def build(self) -> nn.Module:
        """The network this card describes (retrofitted blocks included; a
        :class:`~senet.models.features.FeatureBackbone` of the same levels for a ``features_only``
        card), with fresh weights and this card attached. Weights come from a checkpoint
        (:func:`senet.factory.load_model`)."""
        model = get_model_spec(self.name).build(**self.overrides)
        if self.retrofit is not None:
            retrofit_from_config(model, self.retrofit.to_dict(), self.input_size)
        attach_card(model, self.replace(features_only=False, out_indices=None))
        if self.features_only:
            model = FeatureBackbone(model, list(self.out_indices or ()))
        return attach_card(model, self)

    def eval_transform(self) -> "EvalView":
        """The evaluation view of this network, from this card alone: a callable
        :class:`~senet.data.transforms.EvalView` taking a decoded (C, H, W) image or (B, C, H, W)
        batch (float in [0, 1], or ``uint8``) to the normalised network input. It is what timm's
        ``create_transform(**resolve_data_config({}, model=model))`` builds from the same fields."""
        from ..data.transforms import EvalView  # here: building a model must not load the data stack

        return EvalView.from_config(self)

    def with_view(self, view: "EvalView") -> "ModelCard":
        """This card with the evaluation view ``view`` (input size, mean/std, crop, interpolation)."""
        return self.replace(in_chans=view.input_size[0], input_size=view.input_size, mean=view.mean, std=view.std,
                            crop_pct=view.crop_pct, crop_mode=view.crop_mode, interpolation=view.interpolation)

    def with_head(self, num_classes: int, classes: Sequence[str] | None = None,
                  global_pool: str | None = None) -> "ModelCard":
        """This card for the network after its classifier was replaced by one with ``num_classes``
        outputs (0: none), e.g. by ``reset_classifier``: ``num_classes`` and the rebuild overrides
        follow, so :meth:`build` builds the new head; the class names become ``classes`` or are
        dropped (a fresh classifier predicts unnamed classes). ``global_pool`` records a new pooling."""
        if classes is not None and len(classes) != num_classes:
            raise UserInputError(f"with_head: {len(classes)} class names for num_classes={num_classes}")
        overrides = {**self.overrides, "num_classes": num_classes}
        if global_pool is not None:
            overrides["global_pool"] = global_pool
        return self.replace(num_classes=num_classes, overrides=FrozenMapping(overrides),
                            classes=tuple(classes) if classes is not None else None)

    def with_features(self, out_indices: Sequence[int]) -> "ModelCard":
        """This card for the feature backbone of its network giving the levels ``out_indices``
        (:class:`~senet.models.features.FeatureBackbone`): :meth:`build` builds that backbone."""
        return self.replace(features_only=True, out_indices=tuple(out_indices))

    def with_retrofit(self, spec: Mapping[str, Any]) -> "ModelCard":
        """This card for its network after :func:`senet.retrofit` inserted the blocks ``spec``
        describes (a ``model.retrofit`` mapping, :class:`RetrofitSpec`): :meth:`build` inserts
        them again. A card records one retrofit: a second one is refused."""
        if self.retrofit is not None:
            raise UserInputError(f"the card of {self.name} already records a retrofit; a card holds one "
                                 f"(retrofit the plain network once)")
        return self.replace(retrofit=RetrofitSpec.from_mapping(spec))

    def with_se_gate(self, gate: str) -> "ModelCard":
        """This card for its network after every SE gate was swapped for ``gate`` (Table 12's
        alternatives; :func:`senet.deploy.quantize.swap_gate`): :meth:`build` builds that gate."""
        return self.replace(overrides=FrozenMapping({**self.overrides, "se_gate": gate}))


def attach_card(model: nn.Module, card: ModelCard) -> nn.Module:
    """Set ``card`` as ``model.pretrained_cfg`` and ``model.default_cfg`` (timm's names); returns ``model``."""
    model.pretrained_cfg = card
    model.default_cfg = card
    return model


def card_of(model: nn.Module) -> ModelCard | None:
    """The card attached to ``model`` (unwrapping a ``DistributedDataParallel``/compiled module), or None."""
    for m in (model, getattr(model, "module", None), getattr(model, "_orig_mod", None)):
        card = getattr(m, "pretrained_cfg", None)
        if isinstance(card, ModelCard):
            return card
    return None


def legacy_view(card: Mapping[str, Any]) -> dict[str, Any]:
    """``crop_mode`` (and ``crop_pct``) of a card written before cards recorded the crop mode
    (docs/models.md, "Cards from older versions"): a network trained on an array dataset (a
    name of ``senet.data.DATASETS`` or a ``synthetic:`` spec: CIFAR-style pad-and-crop of whole
    images) gets the whole-image view; everything else (image folders, trained with the
    random-size crop; published and local weights) the centre crop at its recorded ``crop_pct``."""
    spec = card.get("dataset")
    if card.get("weights") == "trained" and isinstance(spec, str) and _is_array_dataset(spec):
        return {"crop_mode": "squash", "crop_pct": 1.0}
    return {"crop_mode": "center"}


def _is_array_dataset(spec: str) -> bool:
    from ..data.datasets import DATASETS  # here: only old checkpoints need the dataset names

    return spec in DATASETS or spec.startswith("synthetic:")


def _argument(spec: "ModelSpec", overrides: Mapping[str, Any], name: str, fallback: Any) -> Any:
    # The value the builder received: an override, a registered default, or the builder's own default.
    if name in overrides:
        return overrides[name]
    if name in spec.defaults:
        return spec.defaults[name]
    param = inspect.signature(spec.builder).parameters.get(name)
    return fallback if param is None or param.default is param.empty else param.default


def _published_copy(spec: "ModelSpec", cfg: "PretrainedConfig | None",
                    weights_file: str) -> "PretrainedConfig | None":
    # A local file is a copy of published weights when it bears their file name
    # ("seresnet50.a1_in1k.safetensors", "se_resnet50-ce0d4300.pth") or when the caller named a
    # tag other than the default; any other file is of unknown provenance: no published view or names.
    name = PurePath(weights_file).name
    for known in spec.pretrained:
        if name == known.cache_name():
            return known
    return cfg if cfg is not None and spec.pretrained and cfg is not spec.pretrained[0] else None


def card_for(spec: "ModelSpec", model: nn.Module, overrides: Mapping[str, Any],
             cfg: "PretrainedConfig | None" = None, weights_file: str | None = None) -> ModelCard:
    """The card of a model ``create_model`` just built from ``spec`` with ``overrides``: the
    published weights' evaluation view and ImageNet-1k names when ``cfg`` was loaded, or when
    ``weights_file`` is a copy of published weights (their file name, or a tag named explicitly);
    else the registered input size, ImageNet statistics and timm's default view (centre crop, 0.875)."""
    if weights_file is not None:
        cfg = _published_copy(spec, cfg, weights_file)
    in_chans = int(getattr(model, "in_chans", _argument(spec, overrides, "in_chans", spec.input_size[0])))
    num_classes = int(getattr(model, "num_classes", _argument(spec, overrides, "num_classes", 1000)))
    size = (in_chans, *(cfg.input_size[1:] if cfg is not None else spec.input_size[1:]))
    mean, std = default_stats(in_chans)
    common = dict(name=spec.name, overrides=overrides, num_classes=num_classes, in_chans=in_chans,
                  input_size=size, classifier=getattr(model, "classifier_name", "fc"))
    if cfg is None:
        weights = "file" if weights_file else "random"
        return ModelCard(**common, mean=mean, std=std, weights=weights, weights_tag=weights_file)
    classes = None
    if num_classes == cfg.num_classes:  # a replaced classifier predicts other, unnamed classes
        classes = class_names(cfg.labels)
    if in_chans == len(cfg.mean):
        mean, std = cfg.mean, cfg.std
    return ModelCard(**common, mean=mean, std=std, crop_pct=cfg.crop_pct, interpolation=cfg.interpolation,
                     classes=classes, weights="file" if weights_file else "published",
                     weights_tag=weights_file or cfg.tag, hub_id=cfg.hub_id, url=cfg.url)
