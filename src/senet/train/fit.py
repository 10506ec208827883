"""``fit``: train one network from a :class:`TrainConfig`, readable top to bottom.

config -> data -> model -> optimiser -> (resume) -> for each epoch: train steps with ``lr_at``,
evaluate, log, checkpoint. Device and precision are arguments/config, never hard-coded; all
printing goes through a :class:`~senet.train.progress.Reporter`; only rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.nn import functional as F

from ..layers.se import check_choice
from ..models.card import ModelCard, RetrofitSpec, attach_card, card_of
from ..models.factory import create_model
from ..models.registry import get_model_spec
from ..weights.checkpoint import CheckpointMeta, checkpoint_paths, save_checkpoint
from .config import ConfigError, TrainConfig, config_from_dict, config_to_dict, dump_config
from .config import check_config, check_model_fits_data, check_resume_changes
from ..device import resolve_device
from .distributed import all_reduce_sum, any_across_ranks, rank_info
from .metrics import TrainMeter, evaluate, summarize
from .optim import build_optimizer, restore_optimizer
from .plots import plot_curves
from .progress import Reporter, TerminalReporter
from .reconcile import has_checkpoint, load_resume_state, reconcile_run_dir
from .rng import capture_rng, restore_rng
from .rundir import environment, write_metrics, write_report, write_run_files
from .runlock import RunDirError, RunLock, describe_os_error, prepare_run_dir, remove_stale_temp_files, results_in
from .schedule import lr_at
from .threads import applies_threads
from .writer import BackgroundWriter, WeightsSnapshot, cpu_snapshot

__all__ = ["fit", "RunResult", "NonFiniteLossError", "resolve_precision", "build_model", "load_data",
           "resume_config", "PRECISIONS"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
PLOT_EVERY_S = 5.0  # curves.png is redrawn at most this often (and after the last epoch): matplotlib is slow


class NonFiniteLossError(RuntimeError):
    """Training diverged: the loss, or the weights/BN statistics or validation loss checked before
    a checkpoint is written, became NaN or infinite. Nothing non-finite is saved: the newest
    finite checkpoint is kept. ``step`` is the first step whose training loss was non-finite, or
    the epoch's last step when the check before saving failed."""

    def __init__(self, epoch: int, step: int, loss: float, what: str = "loss") -> None:
        found = f"loss is {loss}" if what == "loss" else f"{what} became non-finite (validation loss {loss})"
        super().__init__(f"{found} at epoch {epoch}, step {step}; training stopped "
                         f"(the last good checkpoint is kept). Try a lower learning rate or grad_clip.")
        self.epoch, self.step, self.loss = epoch, step, loss


@dataclasses.dataclass
class RunResult:
    """What :func:`fit` returns: metric rows per epoch (``rundir.METRIC_COLUMNS``), the last and
    the best (lowest top-1 error) rows, the trained model (unwrapped, in eval mode) and its card."""

    history: list[dict[str, Any]]
    final: dict[str, Any]
    best: dict[str, Any]
    model: nn.Module
    card: ModelCard
    run_dir: Path | None


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
        raise ValueError("precision='fp16' needs a CUDA device; use 'bf16' or 'fp32' on CPU")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_data(cfg: TrainConfig, image_size: int) -> tuple[Any, Any]:
    """The train and test datasets of ``cfg.data`` (``senet.data.load_dataset``)."""
    from ..data import load_dataset

    d = cfg.data
    kw = dict(root=d.root, download=d.download, image_size=image_size, on_corrupt=d.on_corrupt,
              empty_classes=d.empty_classes)
    return load_dataset(d.dataset, "train", **kw), load_dataset(d.dataset, "test", **kw)


def build_model(cfg: TrainConfig, dataset: Any) -> tuple[nn.Module, ModelCard]:
    """The network of ``cfg.model`` sized for ``dataset`` (classes, channels), and its card
    (attached to it): everything needed to rebuild and use it (name, overrides, the dataset's
    classes and mean/std, input size, the dataset it is trained on)."""
    spec = get_model_spec(cfg.model.name)
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.overrides.items()}
    args = spec.arguments()
    channels = len(dataset.mean)
    check_model_fits_data(cfg, len(dataset.classes), channels)
    if "num_classes" in args:
        overrides.setdefault("num_classes", len(dataset.classes))
    if "in_chans" in args and channels != spec.input_size[0]:
        overrides.setdefault("in_chans", channels)
    model = create_model(cfg.model.name, **overrides)
    # Array datasets know their image size; folders are decoded at image_size (default: the model's).
    size = dataset.input_size[1] if hasattr(dataset, "input_size") else cfg.data.image_size or spec.input_size[1]
    # The evaluation view is the one fit evaluates with (paper §5.1: 0.875, bilinear; whole images below 128 px).
    card = card_of(model).replace(
        classes=tuple(dataset.classes), mean=tuple(dataset.mean), std=tuple(dataset.std),
        input_size=(channels, size, size), crop_pct=0.875, interpolation="bilinear", weights="trained",
        weights_tag=None, hub_id=None, url=None, dataset=cfg.data.dataset, data_root=cfg.data.root,
        dataset_name=dataset.name)
    return attach_card(model, card), card


def resume_config(run_dir: str | Path) -> TrainConfig:
    """The config a run was started with, read from its ``last`` checkpoint (``best`` if that is
    damaged); for a run stopped before its first checkpoint, from its ``config.yaml`` (``fit``
    with ``resume=True`` then starts it over). Raises :class:`RunDirError` while another process
    holds the run."""
    run_dir = Path(run_dir)
    if has_checkpoint(run_dir):
        return config_from_dict(load_resume_state(run_dir)[0]["config"])
    last = checkpoint_paths(run_dir, "last")[1]
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from: {run_dir} is not a directory")
    with RunLock(run_dir):  # a live run that has not checkpointed yet: "in use by pid N"
        pass
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {last} does not exist and {run_dir} has no "
                                f"config.yaml; start a new run into it with senet train --out {run_dir}")
    import yaml

    try:
        data = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{run_dir / 'config.yaml'} is not a valid config: {detail}") from None
    return config_from_dict(data)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@applies_threads  # cfg.threads, restored on return
def fit(cfg: TrainConfig, run_dir: str | Path | None = None, *, device: str | torch.device | None = None,
        resume: bool = False, overwrite: bool = False, stop_after: int | None = None,
        reporter: Reporter | None = None) -> RunResult:
    """Train ``cfg`` on ``device`` (default: CUDA if available); log and checkpoint into ``run_dir``.

    ``resume=True`` continues from ``run_dir/checkpoints/last*`` exactly (weights, optimiser,
    epoch, RNG states, history): 2 epochs + resume + 2 equals 4 straight; it first repairs every
    file of the run directory from that state (``senet.train.reconcile``), falling back to the
    ``best`` state when ``last`` is damaged. ``stop_after=k`` stops after epoch k as if
    interrupted (the run can be resumed). The run directory is locked for the whole run
    (:class:`~senet.train.runlock.RunLock`); a new run into a directory holding another run is
    refused unless ``overwrite=True``. Under ``torch.distributed`` the model is wrapped in
    DistributedDataParallel, each rank trains on its shard and metrics are summed over ranks.

    Raises :class:`NonFiniteLossError` when training diverges (a NaN/inf loss, read from the
    device every ``cfg.sync_every`` steps, or non-finite weights, BN statistics or validation
    loss, checked before each checkpoint): no non-finite checkpoint is ever written. Raises
    :class:`RunDirError` when the run directory is in use, not empty, or cannot be written (disk
    full, permissions). Files are written by a background thread from CPU snapshots, all of them
    before ``fit`` returns or raises.

    Progress (a live bar on a terminal, a line per epoch otherwise, the final table) is printed
    by a :class:`TerminalReporter` unless ``reporter`` is given: ``reporter=Reporter()`` is silent.
    ``cfg.threads`` sets torch's CPU thread count for the run (restored afterwards);
    ``cfg.tensorboard`` also logs each epoch's metrics to ``run_dir/tensorboard`` (rank 0).
    """
    check_config(cfg)  # bad input fails before any work, the run directory included
    device = resolve_device(device)
    if run_dir is None or not rank_info().is_main:
        return _fit(cfg, run_dir, device=device, resume=resume, stop_after=stop_after, reporter=reporter)
    run_dir = Path(run_dir)
    if resume and not run_dir.is_dir():
        raise FileNotFoundError(f"no checkpoint to resume from: {run_dir} is not a directory")
    with RunLock(run_dir):
        if resume and not has_checkpoint(run_dir):  # stopped before its first checkpoint: nothing to continue
            remove_stale_temp_files(run_dir)
            if results_in(run_dir):
                raise RunDirError(f"no checkpoint to resume from in {run_dir}, which holds other files "
                                  f"({', '.join(results_in(run_dir)[:4])}); replace it with senet train --out "
                                  f"{run_dir} --overwrite, or choose another --out")
            resume = False
            reporter = TerminalReporter() if reporter is None else reporter
            reporter.message(f"{run_dir} has no checkpoint yet (stopped before its first epoch ended): "
                             "starting the run over")
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite)
        try:
            return _fit(cfg, run_dir, device=device, resume=resume, stop_after=stop_after, reporter=reporter)
        except OSError as e:
            if e.filename is None or run_dir.resolve() not in Path(e.filename).resolve().parents:
                raise
            # What was written before stays: every file is replaced atomically, so the run resumes.
            raise RunDirError(f"cannot write {describe_os_error(e)}; the files written before are intact, "
                              f"resume with: senet train --resume {run_dir}") from None


def _fit(cfg: TrainConfig, run_dir: str | Path | None, *, device: torch.device,
         resume: bool, stop_after: int | None, reporter: Reporter | None) -> RunResult:
    from ..data import AugmentConfig, make_loader

    reporter = TerminalReporter() if reporter is None else reporter
    ranks = rank_info()
    main = ranks.is_main
    report = reporter if main else Reporter()
    if cfg.tensorboard and main and run_dir is not None:
        from .tensorboard import with_tensorboard

        report = with_tensorboard(report, run_dir)
    amp_dtype = resolve_precision(cfg.precision, device)
    run_dir = Path(run_dir) if run_dir is not None else None
    if resume and run_dir is None:
        raise ValueError("resume=True needs the run directory to resume from")
    if cfg.batch_size % ranks.world_size:
        raise ValueError(f"batch_size={cfg.batch_size} must divide evenly over {ranks.world_size} ranks")

    # Data and model. The seed fixes the initial weights; batches depend only on (seed, epoch, rank).
    torch.manual_seed(cfg.seed)
    size = cfg.data.image_size or get_model_spec(cfg.model.name).input_size[1]
    train_set, test_set = load_data(cfg, size)
    model, card = build_model(cfg, train_set)
    if cfg.model.weights and not resume:
        report.message(_load_initial_weights(model, cfg))
    if cfg.model.retrofit:  # after the (plain) pretrained weights, before resuming the retrofitted ones
        from ..models.retrofit import retrofit_from_config

        report.message(str(retrofit_from_config(model, cfg.model.retrofit, card.input_size)))
        card = dataclasses.replace(card, retrofit=RetrofitSpec.from_mapping(cfg.model.retrofit))
        attach_card(model, card)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.sync_bn and ranks.world_size > 1:  # converts in place, keeping the same Parameter objects
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)

    start, history, resumed = 0, [], {}
    if resume:
        state, tag, notes = load_resume_state(run_dir)
        check_resume_changes(config_from_dict(state["config"]), cfg)  # before any file is touched
        for note in notes:
            report.message(note)
        if main:  # before training on, make every file agree with the state (a kill may have split them)
            for note in reconcile_run_dir(run_dir, state, tag, f"{cfg.model.name} on {train_set.name}"):
                report.message(note)
        from ..weights.convert import load_weights

        load_weights(model, state["model"], source="senet")  # the state file is self-contained
        changed = restore_optimizer(optimizer, state["optimizer"])  # with cfg's hyperparameters, not the saved
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        start, history = state["epoch"], list(state["history"])
        if cfg.epochs < start:
            raise ValueError(f"{run_dir} has already trained {start} epochs; epochs={cfg.epochs} would shorten it. "
                             f"Resume with epochs >= {start} (more epochs extend the run)")
        said = "; ".join(f"optim {k} {a!r} -> {b!r}" for k, (a, b) in changed.items())
        report.message(f"resumed from {run_dir} after epoch {start}" + (f"; applied {said}" if said else ""))
        resumed = {"resumed_after_epoch": start, "resume_changed": {k: list(v) for k, v in changed.items()}}

    net: nn.Module = model
    if ranks.world_size > 1:
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:  # mode "reduce-overhead" replays CUDA graphs: no launch overhead for small networks
        net = torch.compile(net, mode=None if cfg.compile_mode == "default" else cfg.compile_mode)

    augment = AugmentConfig(crop_padding=cfg.data.crop_padding, flip=cfg.data.flip, cutout=cfg.data.cutout)
    shard = dict(device=device, seed=cfg.seed, rank=ranks.rank, world_size=ranks.world_size,
                 num_workers=cfg.data.num_workers)
    train_loader = make_loader(train_set, cfg.batch_size // ranks.world_size, train=True, augment=augment, **shard)
    test_loader = make_loader(test_set, max(cfg.eval_batch_size // ranks.world_size, 1), train=False, **shard)
    steps = len(train_loader)
    params = sum(p.numel() for p in model.parameters())

    if main and run_dir is not None:
        write_run_files(run_dir, dump_config(cfg), environment(device, {
            "world_size": ranks.world_size, "precision": str(amp_dtype or torch.float32).replace("torch.", ""),
            "dataset": train_set.name, "model_params": params, **resumed}))
    report.start({"model": cfg.model.name, "params": params, "dataset": train_set.name, "device": str(device),
                  "precision": str(amp_dtype or torch.float32).replace("torch.", ""), "epochs": cfg.epochs,
                  "steps": steps, "batch_size": cfg.batch_size, "world_size": ranks.world_size, "run_dir": run_dir,
                  "classes": len(train_set.classes)})

    end = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    title = f"{cfg.model.name} on {train_set.name}"
    mark_step = cfg.compile and cfg.compile_mode == "reduce-overhead"  # CUDA graphs: one replay per step
    last_plot = -math.inf
    with BackgroundWriter() as writer:  # run-directory files, written off the training thread
        for epoch in range(start, end):
            # ---- train one epoch: no host-device sync but every cfg.sync_every steps ----
            train_loader.set_epoch(epoch)
            net.train()
            meter = TrainMeter(device)
            lrs = [lr_at(epoch + step / steps, cfg) for step in range(steps)]  # the pure schedule, once an epoch
            t0 = time.perf_counter()
            for step, (x, y) in enumerate(train_loader):
                _set_lr(optimizer, lrs[step])
                if mark_step:
                    torch.compiler.cudagraph_mark_step_begin()
                if cfg.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with _autocast(device, amp_dtype):
                    logits = net(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                meter.update(step, logits, y, loss)  # on the device, with the first non-finite step
                if (step + 1) % cfg.sync_every == 0 or step + 1 == steps:
                    bad = meter.first_bad_step()
                    if bad is not None:
                        _stop(writer, run_dir if main else None, title, history, NonFiniteLossError(
                            epoch + 1, bad[0] + 1, bad[1]))
                if main:
                    report.step(epoch, step, steps, meter.summary)
            train_time = time.perf_counter() - t0
            train = summarize(all_reduce_sum(meter.counts))
            seen = int(meter.counts[3].item())

            # ---- evaluate: the same BN statistics on every rank (those of rank 0), then the full test set ----
            _broadcast_buffers(model, ranks.world_size)
            val = evaluate(model, test_loader, autocast_dtype=amp_dtype, channels_last=cfg.channels_last)
            # Divergence guard: a step can blow the weights up after a finite loss; never save those.
            if any_across_ranks(not (math.isfinite(val["loss"]) and _all_finite(model)), device):
                _stop(writer, run_dir if main else None, title, history, NonFiniteLossError(
                    epoch + 1, steps, val["loss"], what="the weights, BN statistics or validation loss"))
            row = {"epoch": epoch + 1, "lr": lrs[-1], "train_loss": train["loss"],
                   "train_acc": train["acc"], "train_err": train["top1_err"], "val_loss": val["loss"],
                   "top1_err": val["top1_err"], "top5_err": val["top5_err"],
                   "time_s": time.perf_counter() - t0, "images_per_s": seen / max(train_time, 1e-9)}
            history.append(row)
            report.epoch_end(row)

            # ---- log and checkpoint (rank 0): CPU snapshots now, files in the background ----
            if main and run_dir is not None:
                done = epoch + 1
                is_best = row["top1_err"] <= min(r["top1_err"] for r in history)
                save_last = done % cfg.save_every == 0 or done == end or is_best
                plot = done == end or time.monotonic() - last_plot >= PLOT_EVERY_S
                last_plot = time.monotonic() if plot else last_plot
                weights, state = None, {"epoch": done, "history": list(history)}
                if save_last or is_best:  # copies, since training goes on while the writer saves them
                    weights = WeightsSnapshot(model)
                    state.update(optimizer=cpu_snapshot(optimizer.state_dict()), scaler=scaler.state_dict(),
                                 rng=capture_rng(), config=config_to_dict(cfg))
                writer.submit(functools.partial(_write_epoch, run_dir, title, weights, card, state,
                                                last=save_last, best=is_best, plot=plot))

        best = min(history, key=lambda r: r["top1_err"]) if history else {}
        final = history[-1] if history else {}
        top5 = (f", top-5 error {final.get('top5_err', float('nan')):.2f}%" if len(train_set.classes) > 5
                else f" (top-5 error not shown: {len(train_set.classes)} classes)")
        summary = (f"final: top-1 error {final.get('top1_err', float('nan')):.2f}%{top5}; best top-1 error "
                   f"{best.get('top1_err', float('nan')):.2f}% (epoch {best.get('epoch', '-')}) on {test_set.name}")
        if main and run_dir is not None and history:
            writer.submit(functools.partial(write_report, run_dir, title, list(history), summary))
    report.end(history, summary)
    return RunResult(history, final, best, model.eval(), card, run_dir)


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    # A plain float: the optimisers pass it to their kernels as a scalar (no device tensor, no sync).
    for group in optimizer.param_groups:
        if group["lr"] != lr:
            group["lr"] = lr


@torch.no_grad()
def _all_finite(model: nn.Module) -> bool:
    """Whether every floating-point parameter and buffer (BN statistics) is finite: one host sync."""
    flags = [torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _stop(writer: BackgroundWriter, run_dir: Path | None, title: str, history: list[dict[str, Any]],
          error: NonFiniteLossError) -> NoReturn:
    """End a diverged run: finish the pending (finite) checkpoint writes, say why in report.md, raise."""
    writer.flush()
    if run_dir is not None:
        write_report(run_dir, title, history, f"**Stopped**: {error}")
    raise error


def _write_epoch(run_dir: Path, title: str, weights: WeightsSnapshot | None, card: ModelCard,
                 state: dict[str, Any], *, last: bool, best: bool, plot: bool) -> None:
    """One epoch's files (in the writer thread), in the order that keeps the run resumable."""
    done, history = state["epoch"], state["history"]
    if last:
        save_checkpoint(run_dir, "last", weights, CheckpointMeta(card, done), state)
    if best:
        save_checkpoint(run_dir, "best", weights, CheckpointMeta(card, done, history[-1]["top1_err"]), state)
    write_metrics(run_dir, history)
    if plot:
        plot_curves(history, run_dir / "curves.png", title)


def _broadcast_buffers(model: nn.Module, world_size: int) -> None:
    # Without SyncBN each rank's last forward moved its own BN statistics; use rank 0's everywhere
    # so evaluation and the saved checkpoint agree on every rank.
    if world_size > 1:
        import torch.distributed as dist

        for buf in model.buffers():
            dist.broadcast(buf, 0)


def _load_initial_weights(model: nn.Module, cfg: TrainConfig) -> str:
    """Transfer learning: load what fits from ``cfg.model.weights`` and say what did not."""
    from ..weights.convert import load_weights

    report = load_weights(model, cfg.model.weights, source=cfg.model.weights_source, strict=False)
    loaded = len(model.state_dict()) - len(report.missing) - len(report.mismatched)
    if loaded == 0:
        raise ValueError(f"no tensor of {cfg.model.weights} fits {cfg.model.name}:\n{report.describe()}")
    skipped = len(report.missing) + len(report.mismatched)
    return f"initialised {loaded} tensors from {cfg.model.weights}" + (
        f"; {skipped} left at their initial values (e.g. a classifier for other classes)" if skipped else "")
