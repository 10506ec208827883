"""Acceptance: kill a run at every write point (and at random), resume, and get the files of an
uninterrupted run: weights bit-identical, metrics/report equal except the timing columns."""

import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from senet.train import fit
from senet.weights.checkpoint import read_weights

from tiny_run import TIMING, tiny_config, untimed

TESTS = Path(__file__).parent
# Kills the process (no cleanup, like SIGKILL) at the n-th atomic write of a file, just before
# ("during": the temp file is written, not renamed) or just after its rename.
RUNNER = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from tiny_run import tiny_config
from senet.train import fit
run_dir, name, n, when = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
real, seen = os.replace, []
def replace(src, dst, *args, **kwargs):
    if Path(dst).name == name:
        seen.append(name)
        if len(seen) == n and when == "during":
            os._exit(9)
    real(src, dst, *args, **kwargs)
    if len(seen) == n and when == "after" and Path(dst).name == name:
        os._exit(9)
os.replace = replace
print("ready", flush=True)
fit(tiny_config(), run_dir, device="cpu")
"""
POINTS = [("last_state.pt", 3, "after"),       # final epoch: state written, weights not yet
          ("last.safetensors", 3, "after"),    # between last and best
          ("best_state.pt", 3, "after"),       # between the two best files
          ("metrics.csv", 3, "during"),        # during the metrics write (leaves a temp file)
          ("metrics.jsonl", 2, "during"),      # csv and jsonl of different epochs
          ("curves.png", 2, "after"),          # before the report (the plot is redrawn at most every
                                               # 5 s and after the last epoch: at least twice here)
          ("report.md", 1, "during"),
          ("last_state.pt", 2, "during"),      # mid-run
          # The very first writes, before any checkpoint: the directory holds only bookkeeping.
          ("config.yaml", 1, "during"),
          ("env.json", 1, "during"),
          ("last_state.pt", 1, "during")]      # the first state file's temp write


def _table(path):
    rows = list(csv.DictReader(path.open()))
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def _report(path):
    # The table's last two columns are seconds and images/s: they differ between any two runs.
    return [" ".join(line.split()[:-2]) if line[:5].strip().isdigit() else line
            for line in path.read_text().splitlines()]


def _assert_same_run(got: Path, want: Path):
    for tag in ("last", "best"):
        a, meta_a = read_weights(want / f"checkpoints/{tag}.safetensors")
        b, meta_b = read_weights(got / f"checkpoints/{tag}.safetensors")
        assert meta_a == meta_b, tag
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), tag
        sa = torch.load(want / f"checkpoints/{tag}_state.pt", weights_only=True)
        sb = torch.load(got / f"checkpoints/{tag}_state.pt", weights_only=True)
        assert sa["epoch"] == sb["epoch"] and untimed(sa["history"]) == untimed(sb["history"])
        assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert _table(got / "metrics.csv") == _table(want / "metrics.csv")
    rows = [untimed([json.loads(line)]) for line in (got / "metrics.jsonl").read_text().splitlines()]
    assert rows == [untimed([json.loads(line)]) for line in (want / "metrics.jsonl").read_text().splitlines()]
    assert _report(got / "report.md") == _report(want / "report.md")
    assert (got / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in got.rglob(".*.tmp-*")], "orphaned temporary files"


@pytest.mark.slow
def test_kill_at_every_write_point_then_resume_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    writes = []
    real_replace = os.replace

    def counting(src, dst, *args, **kwargs):
        writes.append(Path(dst).name)
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", counting)
    fit(tiny_config(), tmp_path / "straight", device="cpu")
    monkeypatch.setattr(os, "replace", real_replace)
    straight = tmp_path / "straight"

    rng = random.Random(11)
    procs = {}
    for i, (name, n, when) in enumerate(POINTS):
        procs[i] = subprocess.Popen([sys.executable, "-c", RUNNER, str(TESTS), str(tmp_path / f"k{i}"), name,
                                     str(n), when], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Random kills: SIGKILL at a random moment of a run that would otherwise finish.
    randoms = []
    for j in range(2):
        p = subprocess.Popen([sys.executable, "-c", RUNNER, str(TESTS), str(tmp_path / f"r{j}"), "-", "0", "-"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        randoms.append(p)
    for p in randoms:
        assert p.stdout.readline().strip() == b"ready"
    for p in randoms:
        time.sleep(rng.uniform(0.5, 3.0))
        p.send_signal(signal.SIGKILL)
    for p in randoms:
        p.wait()
    for i, p in procs.items():
        _, err = p.communicate(timeout=300)
        name, n, when = POINTS[i]
        fires = writes.count(name) >= n
        assert p.returncode == (9 if fires else 0), (POINTS[i], err.decode()[-2000:])

    # The kills did leave the files of different epochs that the resume must repair.
    assert read_weights(tmp_path / "k0/checkpoints/last.safetensors")[1].epoch == 2
    assert torch.load(tmp_path / "k1/checkpoints/best_state.pt", weights_only=True)["epoch"] == 2
    assert len((tmp_path / "k3/metrics.csv").read_text().splitlines()) == 3 and list(tmp_path.glob("k3/.*.tmp-*"))
    assert not (tmp_path / "k5/report.md").exists()
    for i in (8, 9, 10):  # killed during a first write: its temp file is left, and no checkpoint
        assert list(tmp_path.glob(f"k{i}/**/.*.tmp-*")) and not list(tmp_path.glob(f"k{i}/checkpoints/*_state.pt"))
    for run in [tmp_path / f"k{i}" for i in procs] + [tmp_path / f"r{j}" for j in range(2)]:
        if not list(run.glob("checkpoints/*_state.pt")):
            # Killed before the first checkpoint: reusable by a new run (no --overwrite needed) and
            # resumable (which starts over); both give the uninterrupted run.
            copy = run.with_name(run.name + "-new")
            shutil.copytree(run, copy)
            fit(tiny_config(), copy, device="cpu")
            _assert_same_run(copy, straight)
        fit(tiny_config(), run, device="cpu", resume=True)
        _assert_same_run(run, straight)
