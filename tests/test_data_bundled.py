"""The bundled real-image subsets, the synthetic dataset and ``load_dataset``'s errors."""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest
import torch

from senet.data import DATASETS, ArrayDataset, load_dataset

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_bundled_default_is_the_cifar10_subset() -> None:
    train, test = load_dataset("bundled", "train"), load_dataset("cifar10-mini", "test")
    assert train.images.shape == (5590, 3, 32, 32) and test.images.shape == (500, 3, 32, 32)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    assert train.name == test.name == "CIFAR-10 subset (5,590 train / 500 test)"
    assert train.classes == CIFAR_CLASSES
    # Per-class counts and pixel means as documented in shared/data/README.md.
    assert torch.bincount(train.labels).tolist() == [549, 580, 546, 542, 574, 532, 561, 566, 593, 547]
    assert [round(m * 255, 1) for m in train.mean] == [125.9, 123.5, 114.3]
    assert test.mean == train.mean and test.std == train.std  # test normalised by train statistics


def test_fashion_mnist_subset_is_grey_28x28() -> None:
    train, test = load_dataset("fashion-mnist-mini", "train"), load_dataset("fashion-mnist-mini", "test")
    assert train.images.shape == (8517, 1, 28, 28) and len(test) == 3000
    assert train.input_size == (1, 28, 28)
    assert train.name == "Fashion-MNIST subset (8,517 train / 3,000 test)"
    assert torch.bincount(train.labels).tolist() == [794, 894, 865, 860, 817, 841, 866, 870, 851, 859]
    assert round(train.mean[0] * 255, 1) == 72.8 and len(train.std) == 1
    assert train.classes[0] == "T-shirt/top" and train.classes[-1] == "Ankle boot"


def test_bundled_files_ship_inside_the_package() -> None:
    folder = resources.files("senet.data").joinpath("bundled")
    assert {"cifar10_mini.npz", "fashion_mnist_mini.npz"} <= {p.name for p in folder.iterdir()}


def test_importing_reads_no_data() -> None:
    # numpy.load and Pillow must stay untouched until a dataset is asked for.
    code = (
        "import numpy, sys\n"
        "numpy.load = lambda *a, **k: (_ for _ in ()).throw(SystemExit('numpy.load at import'))\n"
        "import senet.data\n"
        "assert 'PIL' not in sys.modules, 'Pillow imported eagerly'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("spec, shape, n_train, n_test", [
    ("synthetic", (3, 32, 32), 1000, 200),
    ("synthetic:64", (3, 32, 32), 64, 12),
    ("synthetic:40:1x28x20", (1, 28, 20), 40, 10),
])
def test_synthetic_specs(spec: str, shape: tuple[int, ...], n_train: int, n_test: int) -> None:
    train, test = load_dataset(spec, "train"), load_dataset(spec, "test")
    assert train.input_size == shape and len(train) == n_train and len(test) == n_test
    assert sorted(set(train.labels.tolist())) == list(range(10)) and train.mean == test.mean
    again = load_dataset(spec, "train")
    assert torch.equal(again.images, train.images) and torch.equal(again.labels, train.labels)
    assert not torch.equal(train.images[: len(test)], test.images)  # the splits draw different noise


@pytest.mark.parametrize("spec", ["synthetic:", "synthetic:x", "synthetic:5:3x32", "synthetic:0", "synthetic:1:2:3"])
def test_malformed_synthetic_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="synthetic"):
        load_dataset(spec, "train")


def test_unknown_spec_split_and_option_name_the_allowed_values(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=r"dataset='cifar-10'.*'bundled'.*Did you mean 'cifar10'"):
        load_dataset("cifar-10", "train")
    with pytest.raises(ValueError, match=r"split='val'.*'train', 'test'"):
        load_dataset("bundled", "val")
    with pytest.raises(ValueError, match=r"on_corrupt='skip'.*'warn', 'error'"):
        load_dataset("bundled", "train", on_corrupt="skip")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder with train/ and val/"):
        load_dataset(str(tmp_path / "file.txt"), "train")
    with pytest.raises(FileNotFoundError, match="no such folder: .*missing"):
        load_dataset(str(tmp_path / "missing") + "/", "train")
    with pytest.raises(FileNotFoundError, match="no such folder: 'myimagez'"):  # a typo of a folder, not of a name
        load_dataset("myimagez", "train")
    assert {"bundled", "cifar10", "cifar100", "fashion-mnist-mini", "synthetic"} <= set(DATASETS)


def test_array_dataset_validates_its_fields() -> None:
    images, labels = torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    ok = ArrayDataset(images, labels, ["a", "b"], "tiny", (0.5,) * 3, (0.25,) * 3)
    assert len(ok) == 4
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(images.float(), labels, ["a", "b"], "tiny", (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="4 images but 3 labels"):
        ArrayDataset(images, labels[:3], ["a", "b"], "tiny", (0.5,) * 3, (0.25,) * 3)
    with pytest.raises(ValueError, match="one per channel"):
        ArrayDataset(images, labels, ["a", "b"], "tiny", (0.5,), (0.25,))
    with pytest.raises(ValueError, match="one per class"):
        ArrayDataset(images, labels, ["a"], "tiny", (0.5,) * 3, (0.25,) * 3)
