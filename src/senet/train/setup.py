"""What ``fit`` trains with: data, model (and its card), optimiser, loss scaler and the starting
state, built once by :func:`setup` from a :class:`TrainConfig` (docs/training.md).

A resumed run starts from its checkpoint's weights, optimiser state (with the resumed config's
hyperparameters, ``restore_optimizer``), scaler, RNG states and history, so that 2 epochs +
resume + 2 equal 4 straight.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from .. import data
from ..errors import UserInputError
from ..factory import create_model
from ..models.card import ModelCard, attach_card, card_of
from ..models.registry import get_model_spec
from ..models.retrofit import retrofit_from_config
from ..validation import check_choice
from ..weights.convert import load_weights
from .choices import COMPILE_MODES, PRECISIONS
from .config import TrainConfig, check_model_fits_data
from .distributed import RankInfo, rank_info
from .ema import build_ema
from .optim import build_optimizer, restore_optimizer
from .rng import restore_rng
from .run import RunDirectory

__all__ = ["Setup", "setup", "resolve_precision", "precision_name", "image_size", "load_data", "build_model",
           "PRECISIONS", "COMPILE_MODES"]


@dataclasses.dataclass
class Setup:
    """Everything one run trains with, and where it starts (:func:`setup`)."""

    model: nn.Module              # the network itself: what is evaluated, saved and returned
    net: nn.Module                # what trains: ``model``, or its DDP / compiled wrapper
    card: ModelCard
    device: torch.device
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_loader: Any
    test_loader: Any
    amp_dtype: torch.dtype | None  # autocast dtype; None = fp32
    info: dict[str, Any]          # what the run is (model, dataset, device, ...): progress header, env.json
    start: int = 0                # epochs already trained (a resumed run)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    resumed: dict[str, Any] = dataclasses.field(default_factory=dict)  # env.json's record of a resume
    ema: Any = None               # an AveragedModel of ``model`` (cfg.ema_decay > 0), else None

    @property
    def steps(self) -> int:
        """Training steps per epoch."""
        return len(self.train_loader)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32, no autocast).

    ``auto`` is bf16 on CUDA where supported, else fp16, and fp32 on CPU.
    """
    check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        if device.type != "cuda":
            return None
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise UserInputError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(amp_dtype: torch.dtype | None) -> str:
    """``"float32"``, ``"bfloat16"`` or ``"float16"``: the precision a run trains in."""
    return str(amp_dtype or torch.float32).replace("torch.", "")


def image_size(cfg: TrainConfig) -> int:
    """The side images are decoded at: ``data.image_size``, else the model's input size."""
    return cfg.data.image_size or get_model_spec(cfg.model.name).input_size[1]


def load_data(cfg: TrainConfig, image_size: int) -> tuple[Any, Any]:
    """The train and test datasets of ``cfg.data`` (``senet.data.load_dataset``)."""
    d = cfg.data
    kw = dict(root=d.root, download=d.download, image_size=image_size, on_corrupt=d.on_corrupt,
              empty_classes=d.empty_classes)
    # Image folders decode training crops at the train side (RSB A3: 160 px train, 224 px test).
    train_kw = {**kw, "image_size": d.train_image_size or image_size}
    return data.load_dataset(d.dataset, "train", **train_kw), data.load_dataset(d.dataset, "test", **kw)


def build_model(cfg: TrainConfig, dataset: Any) -> tuple[nn.Module, ModelCard]:
    """The network of ``cfg.model`` sized for ``dataset`` (classes, channels), and its card
    (attached to it): everything needed to rebuild and use it (name, overrides, the dataset's
    classes, the dataset it is trained on) and the evaluation view that matches the training
    augmentation of ``dataset``'s pipeline (``dataset.eval_view``: the whole image for array
    datasets, the centre crop for image folders; input size and mean/std included)."""
    spec = get_model_spec(cfg.model.name)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.overrides.items()}
    args = spec.arguments()
    channels = len(dataset.mean)
    check_model_fits_data(cfg, len(dataset.classes), channels)
    if "num_classes" in args:
        overrides.setdefault("num_classes", len(dataset.classes))
    if "in_chans" in args and channels != spec.input_size[0]:
        overrides.setdefault("in_chans", channels)
    if cfg.model.drop_path_rate > 0:  # passed only when set: 0 is every family's network as published
        overrides.setdefault("drop_path_rate", cfg.model.drop_path_rate)
    if cfg.model.fused:  # a runtime choice, not part of the network: the card does not record it
        overrides["se_fused"] = True
    model = create_model(cfg.model.name, **overrides)
    view = dataset.eval_view
    if not hasattr(dataset, "input_size"):  # folders: trained at data.train_image_size, tested at image_size(cfg)
        side = image_size(cfg)
        view = dataclasses.replace(view, input_size=(view.input_size[0], side, side),
                                   crop_pct=cfg.data.eval_crop_pct or view.crop_pct)
    card = card_of(model).with_view(view).replace(
        classes=tuple(dataset.classes), weights="trained", weights_tag=None, hub_id=None, url=None,
        dataset=cfg.data.dataset, data_root=cfg.data.root, dataset_name=dataset.name)
    return attach_card(model, card), card


def setup(cfg: TrainConfig, device: torch.device, run: RunDirectory) -> Setup:
    """Data, model, optimiser, scaler and loaders of ``cfg`` on ``device``; on a resumed ``run``
    (``run.resume_from``), its checkpoint's state, the run directory repaired from it first."""
    ranks = rank_info()
    amp_dtype = resolve_precision(cfg.precision, device)
    if cfg.batch_size % ranks.world_size:
        raise UserInputError(f"batch_size={cfg.batch_size} must divide evenly over {ranks.world_size} ranks")

    torch.manual_seed(cfg.seed)  # fixes the initial weights; batches depend only on (seed, epoch, rank)
    train_set, test_set = load_data(cfg, image_size(cfg))
    model, card = _model(cfg, train_set, device, ranks, run)
    test_set = test_set.with_view(card.eval_transform())  # fit evaluates as senet eval will: from the card
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = build_ema(model, cfg.ema_decay)
    start, history, resumed = 0, [], {}
    if run.resume_from is not None:
        start, history, resumed = _resume(cfg, run, train_set.name, model, optimizer, scaler, ema)

    net = _wrap(model, cfg, device, ranks)
    augment = data.AugmentConfig(crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, cutout=cfg.data.cutout)
    shard = dict(device=device, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size,
                 num_workers=cfg.data.num_workers)
    train_loader = data.make_loader(train_set, cfg.batch_size // ranks.world_size, train=True, augment=augment,
                                    repeats=cfg.data.aug_repeats, **shard)
    test_loader = data.make_loader(test_set, max(cfg.eval_batch_size // ranks.world_size, 1), train=False, **shard)
    info = {"model": cfg.model.name, "params": sum(p.numel() for p in model.parameters()), "dataset": train_set.name,
            "test_dataset": test_set.name, "device": str(device), "precision": precision_name(amp_dtype),
            "epochs": cfg.epochs, "steps": len(train_loader), "batch_size": cfg.batch_size,
            "world_size": ranks.world_size, "classes": len(train_set.classes)}
    return Setup(model, net, card, device, optimizer, scaler, train_loader, test_loader, amp_dtype, info,
                 start, history, resumed, ema)


def _model(cfg: TrainConfig, train_set: Any, device: torch.device, ranks: RankInfo,
           run: RunDirectory) -> tuple[nn.Module, ModelCard]:
    """The network and its card: built for the data, initial weights loaded (a new run),
    retrofitted, on ``device`` in its memory format, with SyncBN across ranks if asked."""
    model, card = build_model(cfg, train_set)
    if cfg.model.weights and run.resume_from is None:
        run.report.message(_load_initial_weights(model, cfg))
    if cfg.model.retrofit:  # after the (plain) pretrained weights, before resuming the retrofitted ones
        run.report.message(str(retrofit_from_config(model, cfg.model.retrofit, card.input_size)))
    card = card_of(model)  # the model's own, as retrofit left it (it updates the card itself: with_retrofit)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and ranks.world_size > 1:  # converts in place, keeping the same Parameter objects
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model, card


def _resume(cfg: TrainConfig, run: RunDirectory, dataset: str, model: nn.Module, optimizer: torch.optim.Optimizer,
            scaler: torch.amp.GradScaler, ema: Any = None) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """Load the state ``run`` resumes (its files repaired from it) into the model, optimiser,
    scaler and RNGs; return ``(epochs trained, history, what env.json records of the resume)``."""
    state = run.resume_state(dataset)
    load_weights(model, state["model"], source="senet")  # the state file is self-contained
    changed = restore_optimizer(optimizer, state["optimizer"])  # with cfg's hyperparameters, not the saved
    scaler.load_state_dict(state["scaler"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    restore_rng(state["rng"])
    start = state["epoch"]
    if cfg.epochs < start:
        raise UserInputError(f"{run.resume_from} has already trained {start} epochs; epochs={cfg.epochs} would shorten "
                             f"it. Resume with epochs >= {start} (more epochs extend the run)")
    said = "; ".join(f"optim {k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
    run.report.message(f"resumed from {run.resume_from} after epoch {start}" + (f"; applied {said}" if said else ""))
    return start, list(state["history"]), {"resumed_after_epoch": start,
                                           "resume_changed": {k: list(v) for k, v in changed.items()}}


def _wrap(model: nn.Module, cfg: TrainConfig, device: torch.device, ranks: RankInfo) -> nn.Module:
    """The module that trains: ``model`` in DistributedDataParallel over the ranks, compiled if asked."""
    net = model
    if ranks.world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # mode "reduce-overhead" replays CUDA graphs: no launch overhead for small networks
        net = torch.compile(net, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)
    return net


def _load_initial_weights(model: nn.Module, cfg: TrainConfig) -> str:
    """Transfer learning: load what fits from ``cfg.model.weights`` and say what did not."""
    report = load_weights(model, cfg.model.weights, source=cfg.model.weights_source, strict=False)
    loaded = len(model.state_dict()) - len(report.missing) - len(report.mismatched)
    if loaded == 0:
        raise UserInputError(f"no tensor of {cfg.model.weights} fits {cfg.model.name}:\n{report.describe()}")
    skipped = len(report.missing) + len(report.mismatched)
    return f"initialised {loaded} tensors from {cfg.model.weights}" + (
        f"; {skipped} left at their initial values (e.g. a classifier for other classes)" if skipped else "")
