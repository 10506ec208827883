"""The training loop's speed machinery: background writer, no host sync per step, throttled
progress, and the GPU recipe chosen on CUDA (with a CUDA-free fake)."""

import threading
import time

import pytest
import torch

from torch import nn

from conftest import registered
from senet.train import Reporter, TerminalReporter, fit, load_config
from senet.train.writer import BackgroundWriter, WeightsSnapshot, cpu_snapshot


class _Pooled(nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.fc = nn.Linear(in_chans, num_classes)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


_models = registered(dict(name="test_loop_linear", builder=_Pooled, family="test", description="pooled linear",
                           input_size=(3, 32, 32)))
LINEAR = ["model.name=test_loop_linear", "model.overrides={}", "eval_batch_size=64", "batch_size=32", "epochs=1"]


def test_writer_runs_tasks_in_order_off_the_calling_thread():
    done, threads = [], set()

    def task(i):
        time.sleep(0.01)
        done.append(i)
        threads.add(threading.current_thread().name)

    with BackgroundWriter(max_pending=2) as w:
        for i in range(5):
            w.submit(lambda i=i: task(i))
        w.flush()
        assert done == [0, 1, 2, 3, 4]
    assert threads == {"senet-writer"}


def test_writer_error_surfaces_in_the_caller_and_later_tasks_are_dropped():
    done = []
    w = BackgroundWriter()
    w.submit(lambda: (_ for _ in ()).throw(OSError("disk full")))
    w.submit(lambda: done.append("after"))
    with pytest.raises(OSError, match="disk full"):
        w.flush()
    w.close()
    assert done == []
    # close() also raises an error nobody has seen yet, unless the caller is already failing.
    w = BackgroundWriter()
    w.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        w.close()
    w = BackgroundWriter()
    w.submit(lambda: 1 / 0)
    w.close(raise_errors=False)
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(lambda: None)


def test_snapshots_do_not_share_storage_with_the_live_model():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    weights, state = WeightsSnapshot(model), cpu_snapshot(opt.state_dict())
    before = {k: v.clone() for k, v in weights.state_dict().items()}
    momentum = state["state"][0]["momentum_buffer"].clone()
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # in place on the live tensors
    assert all(torch.equal(before[k], v) for k, v in weights.state_dict().items())
    assert torch.equal(state["state"][0]["momentum_buffer"], momentum)
    assert not torch.equal(model.weight.detach(), before["weight"])


def _host_reads(monkeypatch):
    """Count every way a tensor's value reaches Python (each one a host-device sync on a GPU)."""
    calls = {"n": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            calls["n"] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


def test_the_training_step_reads_nothing_from_the_device(monkeypatch):
    """Doubling the steps of an epoch adds no host reads: none happens per step (sync_every=100)."""
    reads = []
    for n in (256, 512):  # 8 and 16 steps; the same 3-batch test split
        cfg = load_config("bundled", LINEAR + [f"data.dataset=synthetic:{n}:3x8x8", "sync_every=100"])
        calls = _host_reads(monkeypatch)
        fit(cfg, None, device="cpu")
        monkeypatch.undo()
        reads.append(calls["n"])
    assert reads[0] == reads[1], reads


def test_progress_reads_the_running_means_only_when_it_refreshes(monkeypatch):
    import io

    asked = []

    class Slow(TerminalReporter):
        def step(self, epoch, step, steps, running):
            super().step(epoch, step, steps, lambda: asked.append(step) or running())

    cfg = load_config("bundled", LINEAR + ["data.dataset=synthetic:256:3x8x8"])
    fit(cfg, None, device="cpu", reporter=Slow(io.StringIO(), tty=True, mininterval=3600))
    assert asked == [0, 7]  # the first step, then the epoch's last; never in between

    class Every(Reporter):
        def step(self, epoch, step, steps, running):
            asked.append(round(running()["acc"], 6))

    asked.clear()
    fit(cfg, None, device="cpu", reporter=Every())
    assert len(asked) == 8 and all(0 <= a <= 100 for a in asked)


def test_senet_train_picks_the_gpu_recipe_on_cuda_and_says_so(monkeypatch, capsys):
    """A CUDA-free fake: the device setup answers 'cuda' and fit only records what it was given."""
    import senet.train
    import senet.train.distributed
    from senet.cli import main
    from senet.train.distributed import RankInfo

    seen = {}  # (senet train imports these when it runs, so that its --help needs no torch)
    monkeypatch.setattr(senet.train.distributed, "setup_from_env", lambda device: (RankInfo(), torch.device("cuda")))
    monkeypatch.setattr(senet.train, "fit", lambda cfg, run_dir, **kw: seen.update(cfg=cfg, device=kw["device"]))
    assert main(["train", "--epochs", "1", "--out", "unused"]) == 0
    assert seen["cfg"] == load_config("bundled_gpu", ["epochs=1"]) and seen["device"].type == "cuda"
    assert "bundled_gpu" in capsys.readouterr().out
    # A named recipe, or the CPU, keeps what was asked for.
    assert main(["train", "--config", "bundled", "--epochs", "1", "--out", "unused"]) == 0
    assert seen["cfg"] == load_config("bundled", ["epochs=1"])
    monkeypatch.setattr(senet.train.distributed, "setup_from_env", lambda device: (RankInfo(), torch.device("cpu")))
    assert main(["train", "--epochs", "1", "--out", "unused"]) == 0
    assert seen["cfg"] == load_config("bundled", ["epochs=1"]) and "bundled_gpu" not in capsys.readouterr().out


def test_gpu_recipe_scales_the_default():
    cpu, gpu = load_config("bundled"), load_config("bundled_gpu")
    assert gpu.model == cpu.model and gpu.data == cpu.data
    assert gpu.optim.lr / cpu.optim.lr == gpu.batch_size / cpu.batch_size  # linear scaling rule


def test_bad_loop_options_are_refused():
    with pytest.raises(ValueError, match="sync_every"):
        fit(load_config("bundled", ["sync_every=0"]), None, device="cpu")
    with pytest.raises(ValueError, match="compile_mode"):
        fit(load_config("bundled", ["compile_mode=fast"]), None, device="cpu")


def test_compile_mode_reaches_torch_compile_and_marks_each_cuda_graph_step(monkeypatch):
    """A CUDA-free fake: torch.compile records its mode and returns the network unchanged."""
    seen, marks = {}, []

    def fake_compile(net, mode=None):
        seen["mode"] = mode
        return net

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    cfg = load_config("bundled", LINEAR + ["data.dataset=synthetic:256:3x8x8", "compile=true",
                                           "compile_mode=reduce-overhead"])
    fit(cfg, None, device="cpu")
    assert seen["mode"] == "reduce-overhead" and len(marks) == 8  # one replay boundary per training step
    seen.clear()
    fit(cfg.replace(compile_mode="default"), None, device="cpu")
    assert seen["mode"] is None
