"""Checkpoint files are written atomically: a failure or a kill mid-write keeps the old file."""

import os
import signal
import subprocess
import sys
import time

import pytest

from senet.weights.checkpoint import atomic_write_bytes


def test_failed_write_keeps_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    atomic_write_bytes(path, b"old checkpoint")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during rename")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_bytes(path, b"new checkpoint that never lands")
    assert path.read_bytes() == b"old checkpoint"
    assert os.listdir(tmp_path) == ["last.safetensors"]


WRITER = """
import sys
from senet.weights.checkpoint import atomic_write_bytes
path = sys.argv[1]
blobs = [bytes([65]) * 8_000_000, bytes([66]) * 8_000_000]
i = 0
print("ready", flush=True)
while True:
    atomic_write_bytes(path, blobs[i % 2])
    i += 1
"""


@pytest.mark.slow
def test_sigkill_during_writes_leaves_a_complete_file(tmp_path):
    path = tmp_path / "ckpt.bin"
    path.write_bytes(b"A" * 8_000_000)
    for delay in (0.3, 0.55, 0.8):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = path.read_bytes()
        assert data in (b"A" * 8_000_000, b"B" * 8_000_000)
