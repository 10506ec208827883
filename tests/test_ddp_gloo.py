"""DistributedDataParallel with 2 CPU processes on gloo: shards, reduced metrics, rank-0 I/O, synced weights."""

import json
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torch import nn

SETTINGS = ["model.name=test_ddp_probe", "data.dataset=synthetic:96:3x8x8", "batch_size=16", "eval_batch_size=10",
            "epochs=2", "optim.lr=0.1", "data.crop_padding=0", "data.flip=false", "schedule.name=constant"]


class Probe(nn.Module):
    """A tiny conv net that records a fingerprint of every training image it sees."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))
        self.seen: list[float] = []

    def forward(self, x):
        if self.training:  # without augmentation an image's pixel sum identifies it
            self.seen += x.double().sum(dim=(1, 2, 3)).round(decimals=4).tolist()
        return self.body(x)


def _worker(rank: int, port: int, tmp: str) -> None:
    from senet.models.registry import register_model
    from senet.train import fit, load_config

    register_model("test_ddp_probe", Probe, family="test", description="DDP probe", input_size=(3, 8, 8))
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        result = fit(load_config("bundled", SETTINGS), f"{tmp}/run{rank}", device="cpu")
        torch.save({"weights": result.model.state_dict(), "history": result.history,
                    "seen": result.model.seen}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    # Each rank saw half of each epoch's 96 images, and no image on both ranks.
    assert len(r0["seen"]) == len(r1["seen"]) == 2 * 48
    epoch1_0, epoch1_1 = set(r0["seen"][:48]), set(r1["seen"][:48])
    assert len(epoch1_0 | epoch1_1) == 96 and not epoch1_0 & epoch1_1

    # Weights (and BN statistics) identical across ranks.
    w0, w1 = r0["weights"], r1["weights"]
    assert all(torch.equal(w0[k], w1[k]) for k in w0)

    # Metrics reduced: both ranks report the same numbers, and they equal a single-process
    # evaluation of the final weights on the whole test set.
    strip = lambda h: [{k: v for k, v in row.items() if k not in ("time_s", "images_per_s")} for row in h]
    assert strip(r0["history"]) == strip(r1["history"])
    from senet.data import load_dataset, make_loader
    from senet.train import evaluate

    model = Probe()
    model.load_state_dict(w0)
    full = evaluate(model, make_loader(load_dataset("synthetic:96:3x8x8", "test"), 7, train=False))
    assert abs(full["loss"] - r0["history"][-1]["val_loss"]) < 1e-5
    assert abs(full["top1_err"] - r0["history"][-1]["top1_err"]) < 1e-9

    # Only rank 0 wrote a run directory.
    assert (tmp_path / "run0/checkpoints/last.safetensors").is_file()
    assert json.loads((tmp_path / "run0/env.json").read_text())["world_size"] == 2
    assert not (tmp_path / "run1").exists()
