"""Shared test helpers."""

from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path

import pytest
import torch

# Without CUDA the fused SE kernels are tested through Triton's interpreter. Triton reads the switch
# when it is first imported, and any test module (or torch itself) may import it during collection,
# so it is set here, before all of them; the dispatch reads it again at each call.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# What `senet tune` recorded on this machine steers compile="auto" and backend="tuned": the suite
# reads and writes its own record instead of the user's (~/.cache/senet/tuned.json).
os.environ["SENET_TUNE_FILE"] = os.path.join(tempfile.mkdtemp(prefix="senet-tests-"), "tuned.json")

FIXTURES = Path(__file__).parent / "fixtures"


def fill(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """The deterministic weights the timm fixtures were computed with (fixtures/timm/README.md)."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "num_batches_tracked":
        return torch.zeros(shape, dtype=torch.long)
    if leaf == "running_mean":
        return 0.1 * torch.randn(shape, generator=g)
    if leaf == "running_var":
        return 1.0 + 0.1 * torch.rand(shape, generator=g)
    if len(shape) == 1:
        base = 1.0 if leaf == "weight" else 0.0
        return base + 0.1 * torch.randn(shape, generator=g)
    fan_in = 1
    for s in shape[1:]:
        fan_in *= s
    return torch.randn(shape, generator=g) * (1.0 / fan_in) ** 0.5


def load_timm_fixture(name: str) -> tuple[dict, dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """(metadata, filled state dict, input, reference float64 logits) of one fixture."""
    meta = json.loads((FIXTURES / "timm" / f"{name}.json").read_text())
    sd = {k: fill(k, tuple(s)) for k, s in meta["state_dict"]}
    x = torch.randn(meta["input"]["shape"], generator=torch.Generator().manual_seed(meta["input"]["generator_seed"]))
    ref = torch.tensor(meta["logits_float64"], dtype=torch.float64)
    return meta, sd, x, ref


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)


def registered(*entries: dict):
    """A module-scoped fixture that registers test networks (``register_model`` keyword dicts, with
    ``name`` and ``builder``) for the module's duration and removes them afterwards, so no test module
    changes the registry that other modules see."""

    @pytest.fixture(scope="module", autouse=True)
    def _registered():
        from senet.models.registry import register_model, unregister_model

        for entry in entries:
            entry = dict(entry)
            register_model(entry.pop("name"), entry.pop("builder"), **entry)
        yield
        for entry in entries:
            unregister_model(entry["name"])

    return _registered


def pytest_configure(config) -> None:
    """Under pytest-xdist (``-n``) the workers share the cores: each gets its share of torch's
    intra-op threads, so that two workers on two cores do not each start two threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def pytest_collection_modifyitems(config, items) -> None:
    """``gpu`` tests are skipped without CUDA, ``network`` tests unless SENET_NETWORK_TESTS=1 (CI is offline)."""
    no_gpu = pytest.mark.skip(reason="needs a CUDA device")
    offline = pytest.mark.skip(reason="needs the network (set SENET_NETWORK_TESTS=1)")
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(no_gpu)
        if "network" in item.keywords and os.environ.get("SENET_NETWORK_TESTS") != "1":
            item.add_marker(offline)
