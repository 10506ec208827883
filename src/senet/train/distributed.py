"""Data-parallel helpers around ``torch.distributed`` (launched by ``torchrun``).

The process group is set up by the caller (the CLI, from torchrun's environment variables, or a
test). Library code only asks who it is (:func:`rank_info`) and sums tensors across ranks; with
no process group every helper is the single-process identity.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist

__all__ = ["RankInfo", "rank_info", "all_reduce_sum", "min_across_ranks", "any_across_ranks", "barrier", "setup_from_env", "cleanup"]


@dataclasses.dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only rank 0 prints and writes files."""
        return self.rank == 0


def rank_info() -> RankInfo:
    """This process's rank and the world size (0 of 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return RankInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return RankInfo()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """``t`` summed over all ranks (in place); identity in a single process."""
    if rank_info().world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def min_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """``t`` reduced by element-wise minimum over all ranks (in place); identity in a single process."""
    if rank_info().world_size > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def any_across_ranks(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is true on any (used to stop all ranks together on NaN)."""
    if rank_info().world_size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    if rank_info().world_size > 1:
        dist.barrier()


def setup_from_env(device: str | None = None) -> tuple[RankInfo, torch.device]:
    """Join the process group described by torchrun's variables (``WORLD_SIZE``, ``RANK``, ...).

    NCCL on CUDA, gloo on CPU. Returns this rank's info and its device (``cuda:LOCAL_RANK`` when
    CUDA is used). Without ``WORLD_SIZE > 1`` nothing is initialised.
    """
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    world = int(os.environ.get("WORLD_SIZE", 1))
    local = int(os.environ.get("LOCAL_RANK", 0))
    if world > 1 and not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        dev = torch.device(f"cuda:{local}" if world > 1 else (device if device and ":" in device else "cuda"))
    else:
        dev = torch.device("cpu")
    return rank_info(), dev


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
