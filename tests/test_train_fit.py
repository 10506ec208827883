"""fit end to end on CPU: exact resume, run directory, NaN stop, divergence guard, evaluate."""

import functools
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from senet.data import load_dataset, make_loader
from conftest import registered
from senet.train import NonFiniteLossError, Reporter, apply_overrides, evaluate, load_config, load_model
from senet.train import fit as fit_on

# Pinned to the CPU: these compare numbers (bit-identical resume, evaluate() against the logged
# metrics) that hold on one device, and the suite also runs on CUDA machines.
fit = functools.partial(fit_on, device="cpu")

TINY = ["model.name=se_resnet20", "model.overrides.layers=[1, 1, 1]", "data.dataset=synthetic:256:3x16x16",
        "batch_size=32", "eval_batch_size=20", "optim.lr=0.2", "schedule.name=cosine", "schedule.warmup_epochs=0.5"]
TIMING = ("time_s", "images_per_s")


def tiny(*extra):
    return load_config("bundled", TINY + list(extra))


def untimed(history):
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history]


def test_resume_continues_exactly(tmp_path):
    cfg = tiny("epochs=4")
    straight = fit(cfg, tmp_path / "straight")
    first = fit(cfg, tmp_path / "split", stop_after=2)
    assert len(first.history) == 2
    resumed = fit(cfg, tmp_path / "split", resume=True)
    assert untimed(resumed.history) == untimed(straight.history)
    a = load_file(tmp_path / "straight/checkpoints/last.safetensors")
    b = load_file(tmp_path / "split/checkpoints/last.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # ... and training changed the weights, so the equality above is not vacuous.
    fresh = load_file(tmp_path / "split/checkpoints/best.safetensors") if straight.best["epoch"] != 4 else None
    assert fresh is None or not all(torch.equal(a[k], fresh[k]) for k in a)
    rows = (tmp_path / "split/metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2, 3, 4]


def test_kill_between_the_two_checkpoint_writes_loses_nothing(tmp_path, monkeypatch):
    """The state file (weights included) is written first: a kill right after it leaves a stale
    .safetensors beside a newer, complete state, and resuming from it still reproduces 4 straight epochs."""
    import senet.weights.checkpoint as ckpt

    cfg = tiny("epochs=4")
    straight = fit(cfg, tmp_path / "straight")
    real_write, writes = ckpt.atomic_write_bytes, []

    def write(path, data):
        writes.append(path.name)
        if path.name == "last.safetensors" and writes.count("last_state.pt") == 3:
            raise KeyboardInterrupt("killed between the two writes of epoch 3")
        real_write(path, data)

    monkeypatch.setattr(ckpt, "atomic_write_bytes", write)
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, tmp_path / "killed")
    monkeypatch.setattr(ckpt, "atomic_write_bytes", real_write)
    state = torch.load(tmp_path / "killed/checkpoints/last_state.pt", weights_only=True)
    from senet.train import read_checkpoint_meta
    assert state["epoch"] == 3 and read_checkpoint_meta(tmp_path / "killed/checkpoints/last.safetensors").epoch == 2
    resumed = fit(cfg, tmp_path / "killed", resume=True)
    assert untimed(resumed.history) == untimed(straight.history)
    a = load_file(tmp_path / "straight/checkpoints/last.safetensors")
    b = load_file(tmp_path / "killed/checkpoints/last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_directory_layout_and_learning(tmp_path):
    result = fit(tiny("epochs=3"), tmp_path)
    for name in ("config.yaml", "env.json", "metrics.csv", "metrics.jsonl", "curves.png", "report.md",
                 "checkpoints/last.safetensors", "checkpoints/last_state.pt", "checkpoints/best.safetensors",
                 "checkpoints/best_state.pt"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "lr", "train_loss", "train_acc", "train_err", "val_loss", "top1_err", "top5_err",
                      "time_s", "images_per_s"]
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["packages"]["torch"] and env["cpu_count"] and env["dataset"].startswith("synthetic")
    state = torch.load(tmp_path / "checkpoints/last_state.pt", weights_only=True)
    assert state["epoch"] == 3 and {"torch", "numpy", "python", "cuda"} <= set(state["rng"])
    assert state["config"]["model"]["overrides"]["layers"] == [1, 1, 1]
    # The synthetic classes are separable: three short epochs already beat chance (90% error) clearly.
    assert result.final["top1_err"] < 70 and result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    # The checkpoint alone rebuilds the model, and evaluate() agrees with the logged metrics.
    model = load_model(tmp_path / "checkpoints/last.safetensors")
    card = model.pretrained_cfg
    assert card == result.card and card is model.default_cfg and len(card.classes) == 10
    assert card.input_size == (3, 16, 16) and card.overrides["layers"] == (1, 1, 1) and card.weights == "trained"
    assert card.dataset == "synthetic:256:3x16x16" and not model.training
    test = load_dataset("synthetic:256:3x16x16", "test")
    m = evaluate(model, make_loader(test, 17, train=False))
    assert m["top1_err"] == pytest.approx(result.final["top1_err"]) and m["loss"] == pytest.approx(
        result.final["val_loss"], rel=1e-5)




class _NaNAfter(nn.Module):
    """Outputs NaN from its 11th training forward on (epoch 2, step 3 with 8 steps per epoch)."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)
        self.calls = 0

    def forward(self, x):
        out = self.fc(x.mean(dim=(2, 3)))
        if self.training:
            self.calls += 1
            if self.calls >= 11:
                out = out * float("nan")
        return out




def test_nan_loss_stops_naming_epoch_and_step_and_keeps_last_checkpoint(tmp_path):
    cfg = tiny("epochs=3", "model.name=test_nan_after_10", "model.overrides={}")
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 3") as info:
        fit(cfg, tmp_path)
    assert (info.value.epoch, info.value.step) == (2, 3)
    state = torch.load(tmp_path / "checkpoints/last_state.pt", weights_only=True)
    assert state["epoch"] == 1
    weights = load_file(tmp_path / "checkpoints/last.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert "epoch 2, step 3" in (tmp_path / "report.md").read_text()


def test_reporter_gets_steps_and_epochs_and_fit_prints_nothing(tmp_path, capsys):
    class Recorder(Reporter):
        def __init__(self):
            self.steps, self.epochs = [], []

        def step(self, epoch, step, steps, running):
            self.steps.append((epoch, step, steps))

        def epoch_end(self, metrics):
            self.epochs.append(metrics["epoch"])

    rec = Recorder()
    fit(tiny("epochs=2"), None, reporter=rec)
    assert rec.epochs == [1, 2] and rec.steps == [(e, s, 8) for e in range(2) for s in range(8)]
    assert capsys.readouterr().out == ""


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16"):
        fit(tiny("precision=fp16"), None, device="cpu")


def test_label_smoothing_and_grad_clip_run(tmp_path):
    r = fit(apply_overrides(tiny("epochs=1"), ["label_smoothing=0.1", "grad_clip=1.0", "optim.name=adamw",
                                               "optim.lr=0.003", "optim.decay_norm_and_bias=false",
                                               "channels_last=true"]), None)
    assert r.final["train_loss"] > 0 and r.final["epoch"] == 1


class _LinearBN(nn.Module):
    """A tiny network with BN statistics, fast enough to diverge in a test."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_chans)
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x):
        return self.fc(self.bn(x.mean(dim=(2, 3))))


class _InfStatsAfter(_LinearBN):
    """Finite outputs and loss throughout, but a running statistic (buffer) becomes inf at the 12th
    training forward (the last step of epoch 2 with 6 steps per epoch): only the check of the
    buffers about to be saved can see it."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__(num_classes, in_chans)
        self.calls = 0
        self.register_buffer("stat", torch.ones(in_chans))  # a running statistic outside the autograd graph

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls >= 12:
                with torch.no_grad():
                    self.stat.fill_(float("inf"))
        return out


_models = registered(
    dict(name="test_nan_after_10", builder=_NaNAfter, family="test", description="NaN from the 11th step",
         input_size=(3, 32, 32)),
    dict(name="test_linear_bn", builder=_LinearBN, family="test", description="pooled BN + linear",
         input_size=(3, 32, 32)),
    dict(name="test_inf_stats_after_11", builder=_InfStatsAfter, family="test",
         description="inf BN statistics from step 12", input_size=(3, 32, 32)),
)
LINEAR = ["model.name=test_linear_bn", "model.overrides={}", "data.dataset=synthetic:192:3x8x8", "eval_batch_size=64"]


def _all_finite_files(run_dir):
    files = sorted((run_dir / "checkpoints").glob("*"))
    for f in files:
        tensors = load_file(f) if f.suffix == ".safetensors" else torch.load(f, weights_only=True)["model"]
        assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()), f
    return [f.name for f in files]


def test_divergence_guard_never_saves_non_finite_weights_or_statistics(tmp_path):
    """The loss stays finite; the BN statistics of epoch 2 do not. Epoch 2 is not saved, epoch 1 stays."""
    cfg = tiny("epochs=3", "model.name=test_inf_stats_after_11", *LINEAR[1:])
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 6") as info:
        fit(cfg, tmp_path)
    assert "BN statistics" in str(info.value)
    assert _all_finite_files(tmp_path) == ["best.safetensors", "best_state.pt", "last.safetensors", "last_state.pt"]
    assert torch.load(tmp_path / "checkpoints/last_state.pt", weights_only=True)["epoch"] == 1
    assert "epoch 2, step 6" in (tmp_path / "report.md").read_text()


def test_huge_learning_rate_stops_with_only_finite_checkpoints(tmp_path):
    """Issue 11, failure 1: --lr 1e6 once saved epoch 1 with 76 non-finite tensors."""
    cfg = tiny("epochs=3", "optim.lr=1e6", "schedule.warmup_epochs=0")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+"):
        fit(cfg, tmp_path)
    _all_finite_files(tmp_path)  # nothing non-finite on disk (here: nothing saved at all)
    assert "Stopped" in (tmp_path / "report.md").read_text()


def test_one_step_per_epoch_resumed_at_huge_lr_stops_instead_of_saving_inf(tmp_path):
    """Issue 11, failure 1: one step per epoch, resumed at lr 1e9, once exited 0 with inf weights."""
    base = ["batch_size=192", *LINEAR, "schedule.warmup_epochs=0", "optim.lr=0.1"]
    fit(tiny("epochs=1", *base), tmp_path)
    good = load_file(tmp_path / "checkpoints/last.safetensors")
    with pytest.raises(NonFiniteLossError):
        fit(tiny("epochs=40", *base, "optim.lr=1e30", "optim.weight_decay=0"), tmp_path, resume=True)
    _all_finite_files(tmp_path)
    state = torch.load(tmp_path / "checkpoints/last_state.pt", weights_only=True)
    assert all(math.isfinite(r["val_loss"]) for r in state["history"])
    assert state["epoch"] >= 1 and (state["epoch"] > 1 or all(
        torch.equal(good[k], v) for k, v in load_file(tmp_path / "checkpoints/last.safetensors").items()))


def test_first_non_finite_step_is_recorded_on_the_device_between_syncs(tmp_path):
    """Read only every 5 steps, the NaN of step 3 (epoch 2) is still named as step 3."""
    cfg = tiny("epochs=3", "model.name=test_nan_after_10", "model.overrides={}", "sync_every=5")
    with pytest.raises(NonFiniteLossError, match="epoch 2, step 3"):
        fit(cfg, tmp_path)
    assert torch.load(tmp_path / "checkpoints/last_state.pt", weights_only=True)["epoch"] == 1
