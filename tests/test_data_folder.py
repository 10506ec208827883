"""Image folders: Pillow decoding, §5.1 transforms, corrupt files, seeded multi-worker loading."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from senet.data import CorruptImageError, ImageFolderDataset, load_dataset, make_loader
from senet.data.folder import IMAGENET_MEAN, IMAGENET_STD, SkippedImageError
from senet.data.transforms import random_resized_crop, resize_center_crop


def _save(path: Path, size: tuple[int, int], colour: tuple[int, int, int] | int, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """train/{cat,dog}: 3 images each (PNG, JPEG, grey, various sizes); val/: 2 each."""
    root = tmp_path / "pets"
    for split, count in (("train", 3), ("val", 2)):
        for label, name in enumerate(("cat", "dog")):
            for i in range(count):
                colour = (40 * i, 100 * label, 200)
                ext = ".jpg" if i == 1 else ".png"
                _save(root / split / name / f"{i}{ext}", (40 + 10 * i, 30 + 5 * label), colour)
    _save(root / "train" / "dog" / "grey.png", (33, 47), 128, mode="L")
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    return root


def _add_corrupt(root: Path) -> tuple[Path, Path]:
    garbage = root / "val" / "cat" / "0_broken.jpg"
    garbage.write_bytes(b"\xff\xd8 this is not a jpeg")
    good = root / "val" / "cat" / "zz_truncated.png"
    _save(good, (64, 64), (1, 2, 3))
    good.write_bytes(good.read_bytes()[:60])  # cut inside the image data
    return garbage, good


def test_classes_splits_and_items(folder: Path) -> None:
    train = load_dataset(str(folder), "train", image_size=32)
    test = load_dataset(folder, "test", image_size=32)  # "test" reads val/
    assert isinstance(train, ImageFolderDataset) and train.classes == ["cat", "dog"] == test.classes
    assert len(train) == 7 and len(test) == 4 and train.labels == [0, 0, 0, 1, 1, 1, 1]
    assert "pets" in train.name and train.mean == IMAGENET_MEAN and train.std == IMAGENET_STD
    x, label = test[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == 0
    # A uniform image stays uniform through resize + crop; normalisation uses ImageNet statistics.
    expected = (torch.tensor([0.0, 0.0, 200.0]) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x, expected.view(3, 1, 1).expand(3, 32, 32), atol=1e-5)
    viewed = test.with_view(test.eval_view.replace(mean=(0.0,) * 3, std=(1.0,) * 3))  # e.g. a checkpoint's view
    assert torch.allclose(viewed[0][0][:, 0, 0], torch.tensor([0.0, 0.0, 200 / 255]), atol=1e-6)
    assert torch.allclose(test[0][0], x)  # the dataset it came from keeps its own view
    grey, _ = train[6]  # the grey image comes back as 3 equal channels
    assert grey.shape == (3, 32, 32)
    assert torch.allclose(grey * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1),
                          torch.full((3, 32, 32), 128 / 255), atol=1e-5)


def test_eval_view_is_resize_then_centre_crop() -> None:
    # Columns 0..99 of a 50x100 image: the shorter edge goes to 256 (for 224), width to 512.
    img = torch.arange(100, dtype=torch.uint8).view(1, 1, 100).expand(3, 50, 100).contiguous()
    out = resize_center_crop(img, 224)
    assert out.shape == (3, 224, 224)
    # The centre crop keeps the middle 224 of 512 columns: source columns ~28..72.
    assert 25 <= int(out[0, 0, 0]) <= 31 and 69 <= int(out[0, 0, -1]) <= 74
    assert torch.equal(out[:, 0], out[:, -1])  # rows are unchanged by a horizontal ramp


def test_random_resized_crop_is_seeded() -> None:
    img = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crops = [random_resized_crop(img, 24, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert crops[0].shape == (3, 24, 24) and crops[0].dtype == torch.uint8
    assert torch.equal(crops[0], crops[1]) and not torch.equal(crops[0], crops[2])
    # An impossible aspect-ratio range falls back to the centred crop instead of failing.
    fallback = random_resized_crop(img, 24, torch.Generator().manual_seed(0), ratio=(10.0, 11.0))
    assert fallback.shape == (3, 24, 24)


def test_corrupt_image_fails_naming_the_file(folder: Path) -> None:
    garbage, truncated = _add_corrupt(folder)
    test = load_dataset(folder, "test", image_size=16, on_corrupt="error")
    paths = [p for p, _ in test.samples]
    with pytest.raises(CorruptImageError, match=str(garbage)):
        test[paths.index(garbage)]
    with pytest.raises(CorruptImageError, match=str(truncated)):
        test[paths.index(truncated)]
    with pytest.raises(CorruptImageError, match="0_broken.jpg"):
        list(make_loader(test, 2, train=False, num_workers=0))


def test_corrupt_image_fails_naming_the_file_from_a_worker(folder: Path) -> None:
    garbage, _ = _add_corrupt(folder)
    test = load_dataset(folder, "test", image_size=16, on_corrupt="error")
    with pytest.raises(CorruptImageError, match=str(garbage)) as info:
        list(make_loader(test, 2, train=False, num_workers=1))
    # Raised in the main process with the one-line message, not the worker's traceback text.
    assert str(info.value).startswith("cannot decode image") and "\n" not in str(info.value)
    assert "Traceback" not in str(info.value) and "worker" not in str(info.value)


def test_corrupt_image_is_skipped_with_a_warning(folder: Path) -> None:
    garbage, truncated = _add_corrupt(folder)
    test = load_dataset(folder, "test", image_size=16)  # on_corrupt="warn" by default
    paths = [p for p, _ in test.samples]
    with pytest.raises(SkippedImageError, match=str(garbage)):  # never replaced by another image
        test[paths.index(garbage)]
    for workers in (0, 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            batches = list(make_loader(test, 3, train=False, num_workers=workers))
        # Dropped from the split: every other image once, none twice, so counts are over what exists.
        good = [i for i, p in enumerate(paths) if p not in (garbage, truncated)]
        assert sum(len(y) for _, y in batches) == len(paths) - 2
        assert torch.cat([y for _, y in batches]).tolist() == [test.samples[i][1] for i in good]
        messages = " ".join(str(w.message) for w in caught)
        assert str(garbage) in messages and str(truncated) in messages and "left out of the test split" in messages


def test_training_loader_is_seeded_and_independent_of_workers(folder: Path) -> None:
    train = load_dataset(folder, "train", image_size=16)

    def epoch(num_workers: int, epoch: int, rank: int = 0, world_size: int = 1) -> list[torch.Tensor]:
        loader = make_loader(train, 2, train=True, seed=4, num_workers=num_workers, rank=rank,
                             world_size=world_size, drop_last=False)
        loader.set_epoch(epoch)
        return [torch.cat([x.flatten(1), y.view(-1, 1).float()], 1) for x, y in loader]

    serial = epoch(0, 1)
    assert len(serial) == 4 and serial[0].shape[0] == 2
    assert all(torch.equal(a, b) for a, b in zip(serial, epoch(2, 1)))  # same batches from 2 workers
    assert not all(torch.equal(a, b) for a, b in zip(serial, epoch(0, 2)))
    ranks = [torch.cat(epoch(0, 1, r, 2)) for r in range(2)]
    assert ranks[0].shape[0] == ranks[1].shape[0] == 4  # 7 images: padded to 8, 4 per rank
    loader = make_loader(train, 2, train=True, num_workers=0)
    assert len(loader) == 3 and loader.num_samples == 6


def test_folder_layout_errors(tmp_path: Path, folder: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no train/ sub-folder"):
        ImageFolderDataset(tmp_path, "train")
    (folder / "val" / "bird").mkdir()
    assert ImageFolderDataset(folder, "test").classes == ["cat", "dog"]  # an empty folder is no class
    _save(folder / "val" / "bird" / "0.png", (8, 8), 0)
    with pytest.raises(ValueError, match=r"class folder\(s\) \['bird'\]"):
        ImageFolderDataset(folder, "test")
    empty = tmp_path / "empty"
    (empty / "train" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="holds no images"):
        ImageFolderDataset(empty, "train")
    _save(empty / "train" / "a" / "0.png", (8, 8), 0)
    with pytest.raises(FileNotFoundError, match="no val/ sub-folder"):
        ImageFolderDataset(empty, "test")
    with pytest.raises(ValueError, match="image_size"):
        ImageFolderDataset(folder, "train", image_size=0)


def test_class_folders_without_images_are_skipped_with_a_warning_or_refused(folder: Path) -> None:
    (folder / "train" / "empty").mkdir()
    (folder / "train" / "texts").mkdir()
    (folder / "train" / "texts" / "readme.txt").write_text("no images here")
    (folder / "val" / "texts").mkdir()  # val/ may mirror the skipped folder, if without images
    with pytest.warns(RuntimeWarning, match=r"skipping class folder\(s\) \['empty', 'texts'\]"):
        train = load_dataset(folder, "train", image_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the test split repeats the decision without a second warning
        test = load_dataset(folder, "test", image_size=16)
    assert train.classes == test.classes == ["cat", "dog"] and len(train) == 7
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"\['empty', 'texts'\].*hold no images"):
            load_dataset(folder, split, image_size=16, empty_classes="error")
    with pytest.raises(ValueError, match="empty_classes"):
        load_dataset(folder, "train", empty_classes="skip")
    # A val/ folder with images for a class train/ lacks images of is refused: the class lists differ.
    _save(folder / "val" / "empty" / "0.png", (8, 8), 0)
    with pytest.raises(ValueError, match=r"\['empty'\] with images that train/ does not"):
        load_dataset(folder, "test", image_size=16)


def test_symlink_loops_are_not_followed(folder: Path) -> None:
    cat = folder / "train" / "cat"
    (cat / "again").symlink_to(cat, target_is_directory=True)  # a loop onto itself
    (cat / "up").symlink_to(folder / "train", target_is_directory=True)  # onto an ancestor (holds dog/)
    other = folder.parent / "extra"
    _save(other / "x.png", (8, 8), 0)
    (cat / "extra").symlink_to(other, target_is_directory=True)  # a plain link is followed...
    (cat / "extra2").symlink_to(other, target_is_directory=True)  # ...once per real folder
    with pytest.warns(RuntimeWarning, match="links back"):
        train = load_dataset(folder, "train", image_size=16)
    names = sorted(p.name for p, label in train.samples if label == 0)
    assert names == ["0.png", "1.jpg", "2.png", "x.png"]
    assert len(train) == 8


def test_a_split_without_a_decodable_image_fails_when_loaded(folder: Path) -> None:
    for path in (folder / "val").rglob("*.*"):
        path.write_bytes(b"not an image")
    with pytest.raises(CorruptImageError, match=r"no image of the 4 under .*val can be decoded; the first: .*0.png"):
        load_dataset(folder, "test", image_size=16)
    assert len(load_dataset(folder, "train", image_size=16)) == 7
