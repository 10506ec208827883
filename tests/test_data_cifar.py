"""CIFAR archives: reading in place, downloading from a local HTTP server, and the failures."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import pickle
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

from senet.data import ChecksumError, DatasetNotFoundError, download_archive, load_dataset
from senet.data.cifar import CIFAR, load_cifar

CLASSES10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _batch(rng: np.random.Generator, n: int, label_key: bytes, num_classes: int) -> dict:
    # The layout of the official python batches: bytes keys, (N, 3072) uint8 rows, list labels.
    return {
        b"batch_label": b"generated batch",
        label_key: rng.integers(0, num_classes, n).tolist(),
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def make_archive(path: Path, kind: str = "cifar10", per_batch: int = 6, test: int = 5) -> bytes:
    """Write a small archive in the official CIFAR python format to ``path``; return its bytes."""
    source = CIFAR[kind]
    rng = np.random.default_rng(0)
    members: dict[str, dict] = {}
    if kind == "cifar10":
        for name in source.train_files:
            members[name] = _batch(rng, per_batch, b"labels", 10)
        members["test_batch"] = _batch(rng, test, b"labels", 10)
        members["batches.meta"] = {b"label_names": [c.encode() for c in CLASSES10], b"num_cases_per_batch": per_batch}
    else:
        for name, n in (("train", per_batch * 5), ("test", test)):
            members[name] = _batch(rng, n, b"fine_labels", 100) | {b"coarse_labels": [0] * n}
        members["meta"] = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                           b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, obj in members.items():
            data = pickle.dumps(obj, protocol=2)
            info = tarfile.TarInfo(f"{source.folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@contextlib.contextmanager
def serve(routes: dict[str, bytes], *, max_requests: int = 8, lifetime_s: float = 30.0) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 serving ``routes``; it answers at most ``max_requests`` requests
    and shuts itself down after ``lifetime_s`` seconds, or when the block exits.

    ``/partial`` answers with a Content-Length larger than the bytes it sends, then closes: an
    interrupted download.
    """
    served = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            served.append(self.path)
            body = routes.get(self.path)
            if len(served) > max_requests or body is None:
                self.send_error(404)
                return
            self.send_response(200)
            partial = self.path == "/partial"
            self.send_header("Content-Length", str(len(body) + (1000 if partial else 0)))
            self.end_headers()
            self.wfile.write(body)
            if partial:
                self.close_connection = True

        def log_message(self, *args: object) -> None:  # keep the test output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    timer = threading.Timer(lifetime_s, server.shutdown)
    timer.daemon = True
    thread.start()
    timer.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        timer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture()
def archive(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "src" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    return path, make_archive(path)


def _expected(data: bytes, member: str) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return pickle.load(tar.extractfile(f"cifar-10-batches-py/{member}"), encoding="bytes")


def test_reads_archive_in_place_with_official_layout(archive: tuple[Path, bytes]) -> None:
    path, data = archive
    train = load_dataset("cifar10", "train", root=path)
    test = load_dataset("cifar10", "test", root=path)
    assert train.images.shape == (30, 3, 32, 32) and test.images.shape == (5, 3, 32, 32)
    assert train.name == "CIFAR-10 (30 train / 5 test)" == test.name
    assert train.classes == CLASSES10
    # Row layout: 1024 red, 1024 green, 1024 blue values, each plane row-major.
    first = _expected(data, "data_batch_1")
    assert torch.equal(train.images[0], torch.from_numpy(first[b"data"][0].reshape(3, 32, 32)))
    assert train.labels[:6].tolist() == first[b"labels"]
    assert test.labels.tolist() == _expected(data, "test_batch")[b"labels"]
    # Both splits are normalised with the train split's statistics.
    assert train.mean == test.mean and train.std == test.std
    pixels = train.images.double().permute(1, 0, 2, 3).reshape(3, -1) / 255
    assert np.allclose(train.mean, pixels.mean(1).numpy()) and np.allclose(train.std, pixels.std(1, unbiased=False))


def test_reads_extracted_folder_and_folder_holding_it(archive: tuple[Path, bytes], tmp_path: Path) -> None:
    path, _ = archive
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    from_archive = load_dataset("cifar10", "test", root=path)
    for root in (tmp_path / "extracted", tmp_path / "extracted" / "cifar-10-batches-py", path.parent):
        ds = load_dataset("cifar10", "test", root=root)
        assert torch.equal(ds.images, from_archive.images) and torch.equal(ds.labels, from_archive.labels)


def test_cifar100_fine_labels(tmp_path: Path) -> None:
    path = tmp_path / "cifar-100-python.tar.gz"
    make_archive(path, "cifar100")
    ds = load_dataset("cifar100", "train", root=tmp_path)
    assert len(ds) == 30 and len(ds.classes) == 100 and ds.classes[7] == "fine7"
    assert ds.name == "CIFAR-100 (30 train / 5 test)"


def test_offline_without_copy_says_where_to_put_the_archive(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("cifar10", "train", root=tmp_path / "data")
    message = str(err.value)
    assert str(tmp_path / "data") in message and "cifar-10-python.tar.gz" in message
    assert "c58f30108f718f92721af3b95e74349a" in message and "download" in message


def test_download_from_local_server_with_overridden_url(archive: tuple[Path, bytes], tmp_path: Path) -> None:
    _, data = archive
    md5 = hashlib.md5(data).hexdigest()
    root = tmp_path / "cache"
    with serve({"/c10.tar.gz": data}) as base:
        ds = load_cifar("cifar10", "train", root=root, download=True, url=f"{base}/c10.tar.gz", md5=md5)
    assert len(ds) == 30
    assert (root / "cifar-10-python.tar.gz").read_bytes() == data
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]  # no temporary file left
    # Now the copy is local: no server, no download flag needed.
    assert torch.equal(load_dataset("cifar10", "train", root=root).images, ds.images)
    # A root naming the archive file downloads to exactly that file.
    named = tmp_path / "named" / "c10.tar.gz"
    with serve({"/c10.tar.gz": data}) as base:
        load_cifar("cifar10", "test", root=named, download=True, url=f"{base}/c10.tar.gz", md5=md5)
    assert named.read_bytes() == data


def test_download_url_and_md5_from_environment(archive: tuple[Path, bytes], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _, data = archive
    with serve({"/mirror/c10.tar.gz": data}) as base:
        monkeypatch.setenv("SENET_CIFAR10_URL", f"{base}/mirror/c10.tar.gz")
        monkeypatch.setenv("SENET_CIFAR10_MD5", hashlib.md5(data).hexdigest())
        monkeypatch.setenv("SENET_DATA_DIR", str(tmp_path / "env-root"))
        ds = load_dataset("cifar10", "test", download=True)  # root from SENET_DATA_DIR
    assert len(ds) == 5 and (tmp_path / "env-root" / "cifar-10-python.tar.gz").is_file()


def test_checksum_mismatch_discards_the_download(archive: tuple[Path, bytes], tmp_path: Path) -> None:
    _, data = archive
    root = tmp_path / "cache"
    with serve({"/c10.tar.gz": data}) as base:
        # The official checksum applies to a mirror URL: these generated bytes do not match it.
        with pytest.raises(ChecksumError, match="c58f30108f718f92721af3b95e74349a"):
            load_cifar("cifar10", "train", root=root, download=True, url=f"{base}/c10.tar.gz")
    assert list(root.iterdir()) == []


def test_interrupted_download_never_looks_complete(archive: tuple[Path, bytes], tmp_path: Path) -> None:
    _, data = archive
    dest = tmp_path / "cache" / "cifar-10-python.tar.gz"
    with serve({"/partial": data}) as base:
        with pytest.raises(DatasetNotFoundError, match="IncompleteRead"):
            download_archive(f"{base}/partial", dest, hashlib.md5(data).hexdigest())
    assert list(dest.parent.iterdir()) == []


def test_unreachable_server_and_missing_file_are_clear_errors(tmp_path: Path) -> None:
    with serve({}) as base:
        with pytest.raises(DatasetNotFoundError, match="Not Found"):
            download_archive(f"{base}/missing.tar.gz", tmp_path / "a.tar.gz", "0" * 32)
    # The server has stopped: its port now refuses connections, as when offline.
    with pytest.raises(DatasetNotFoundError, match=r"could not download .* put it at"):
        download_archive(f"{base}/missing.tar.gz", tmp_path / "a.tar.gz", "0" * 32, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_server_answers_a_bounded_number_of_requests(tmp_path: Path) -> None:
    with serve({"/x": b"abc"}, max_requests=1) as base:
        download_archive(f"{base}/x", tmp_path / "x", hashlib.md5(b"abc").hexdigest())
        with pytest.raises(DatasetNotFoundError):
            download_archive(f"{base}/x", tmp_path / "y", hashlib.md5(b"abc").hexdigest())


def test_malformed_archives_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "cifar-10-python.tar.gz"
    bad.write_bytes(b"not a tarball")
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        load_dataset("cifar10", "train", root=bad)
    # A pickle that would run code is refused, not executed.
    evil = tmp_path / "evil" / "cifar-10-batches-py"
    evil.mkdir(parents=True)
    payload = pickle.dumps(print)  # a global outside the numpy allow-list
    for name in CIFAR["cifar10"].train_files + ("test_batch", "batches.meta"):
        (evil / name).write_bytes(payload)
    with pytest.raises(ValueError, match="not a CIFAR python batch.*builtins.print"):
        load_dataset("cifar10", "train", root=evil)
