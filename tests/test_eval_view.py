"""The evaluation view: timm's data-config semantics, recorded in the card by the pipeline a network
trained with, and built from the card alone by every consumer (docs/models.md, "The evaluation view")."""

import math

import pytest
import torch
from PIL import Image
from torch.nn import functional as F

import senet
from senet.analysis.evaluate import card_dataset
from senet.data import load_dataset, make_loader
from senet.data.arrays import write_image_folder
from senet.data.images import decode_image
from senet.data.transforms import CROP_MODES, INTERPOLATIONS, EvalView
from senet.deploy.export import check_view
from senet.deploy.predict import load_image
from senet.deploy.quantize import dataset_tensors
from senet.models import card as card_module
from senet.models.card import ModelCard
from senet.train import load_config
from senet.train.setup import build_model
from senet.factory import load_checkpoint
from senet.weights.checkpoint import CheckpointMeta, save_checkpoint


# --- timm's semantics, written out from timm's documentation and code -----------------------------
# timm.data.resolve_data_config fills crop_pct (0.875) and crop_mode ("center") when a config leaves
# them out; timm.data.create_transform(is_training=False) then builds transforms_imagenet_eval:
#   scale_size = floor(img_size / crop_pct) per side;
#   "squash": Resize(scale_size) (both edges), CenterCrop(img_size);
#   "border": ResizeKeepRatio(scale_size, longest=1), CenterCropOrPad(img_size, fill=round(255 * mean));
#   "center": square scale_size: torchvision Resize(int) (shorter edge, longer edge int-truncated),
#             else ResizeKeepRatio(scale_size) (longest=0); then CenterCrop(img_size);
#   ToTensor, Normalize(mean, std).
# torchvision's CenterCrop puts the window at int(round((size - crop) / 2)); ResizeKeepRatio scales by
# ratio = longest * max(h / th, w / tw) + (1 - longest) * min(...) and rounds each side.

def timm_resolve(cfg: dict) -> dict:
    return {"input_size": tuple(cfg["input_size"]), "crop_pct": cfg.get("crop_pct") or 0.875,
            "crop_mode": cfg.get("crop_mode") or "center", "interpolation": cfg.get("interpolation") or "bilinear",
            "mean": tuple(cfg["mean"]), "std": tuple(cfg["std"])}


def timm_eval_geometry(data_config: dict, h: int, w: int) -> tuple[tuple, tuple, tuple]:
    """(resized size, padding top/bottom/left/right, crop offset) of timm's eval transform for an h x w image."""
    th, tw = data_config["input_size"][1:]
    pct, mode = data_config["crop_pct"], data_config["crop_mode"]
    scale = (math.floor(th / pct), math.floor(tw / pct))

    def keep_ratio(longest: float) -> tuple[int, int]:
        rh, rw = h / scale[0], w / scale[1]
        ratio = max(rh, rw) * longest + min(rh, rw) * (1 - longest)
        return round(h / ratio), round(w / ratio)

    if mode == "squash":
        size = scale
    elif mode == "border":
        size = keep_ratio(1.0)
    elif scale[0] == scale[1]:
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(scale[0] * long / short)
        size = (scale[0], new_long) if h <= w else (new_long, scale[0])
    else:
        size = keep_ratio(0.0)
    pad = (0, 0, 0, 0)
    if th > size[0] or tw > size[1]:  # CenterCropOrPad
        dh, dw = max(th - size[0], 0), max(tw - size[1], 0)
        pad = (dh // 2, (dh + 1) // 2, dw // 2, (dw + 1) // 2)
    ph, pw = size[0] + pad[0] + pad[1], size[1] + pad[2] + pad[3]
    return size, pad, (int(round((ph - th) / 2.0)), int(round((pw - tw) / 2.0)))


SIZES = [(3, 32, 32), (3, 224, 224), (3, 32, 48), (3, 240, 200)]
IMAGES = [(32, 32), (40, 50), (50, 40), (224, 224), (375, 500), (500, 375), (31, 97)]


@pytest.mark.parametrize("crop_mode", CROP_MODES)
@pytest.mark.parametrize("crop_pct", [1.0, 0.875, 0.95, 0.9])
def test_view_geometry_is_timms(crop_mode, crop_pct):
    for size in SIZES:
        card = ModelCard("se_resnet20", input_size=size, crop_pct=crop_pct, crop_mode=crop_mode)
        view = card.eval_transform()
        for h, w in IMAGES:
            g = view.geometry(h, w)
            assert (g.resize, g.pad, g.crop) == timm_eval_geometry(timm_resolve(dict(card)), h, w), (size, h, w)


def test_view_pixels_follow_the_geometry_and_normalise():
    img = torch.rand(3, 61, 83)
    for mode in CROP_MODES:
        view = EvalView((3, 32, 48), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), crop_pct=0.9, crop_mode=mode,
                        interpolation="bicubic")
        (rh, rw), (top, bottom, left, right), (ct, cl) = timm_eval_geometry(timm_resolve(dict(
            input_size=view.input_size, crop_pct=0.9, crop_mode=mode, mean=view.mean, std=view.std)), 61, 83)
        x = F.interpolate(img[None], size=(rh, rw), mode="bicubic", antialias=True)[0].clamp(0, 1)
        fill = torch.tensor([round(255 * m) / 255 for m in view.mean]).view(3, 1, 1)
        canvas = fill.expand(3, rh + top + bottom, rw + left + right).clone()
        canvas[:, top:top + rh, left:left + rw] = x
        want = (canvas[:, ct:ct + 32, cl:cl + 48] - torch.tensor(view.mean).view(3, 1, 1)) / torch.tensor(
            view.std).view(3, 1, 1)
        torch.testing.assert_close(view(img), want)
        # A batch of same-size images goes through the view as one.
        torch.testing.assert_close(view(torch.stack([img, img]))[1], want)
    border = EvalView((3, 32, 32), (0.5,) * 3, (0.5,) * 3, crop_pct=1.0, crop_mode="border")
    assert border.geometry(16, 32).pad == (8, 8, 0, 0)  # letterboxed with the mean colour (0 after normalising)
    assert border(torch.ones(3, 16, 32))[:, :8].abs().max() <= 1 / 255 + 1e-6  # round(255 * 0.5) / 255 - 0.5


def test_missing_fields_get_timms_defaults_and_the_constants_agree():
    view = EvalView.from_config({"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    assert (view.crop_pct, view.crop_mode, view.interpolation) == (0.875, "center", "bilinear")
    # The card validates with its own copies (building a model does not load the data stack).
    assert card_module.CROP_MODES == CROP_MODES and card_module.INTERPOLATIONS == INTERPOLATIONS
    with pytest.raises(ValueError, match="crop_mode"):
        ModelCard("se_resnet20", crop_mode="whole")
    with pytest.raises(ValueError, match="crop_mode"):
        EvalView((3, 8, 8), (0.5,) * 3, (0.5,) * 3, crop_mode="whole")


# --- what training writes, and what every consumer reads --------------------------------------------

def _png(path, size, seed):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[0], size[1], 3), generator=g, dtype=torch.uint8)
    pixels[: size[0] // 2] //= 3  # structure, so that crops and resizes differ
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.numpy()).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("views") / "shapes"
    for split, cls, seed in (("train", "ant", 1), ("train", "bee", 2), ("val", "ant", 3), ("val", "bee", 4)):
        _png(root / split / cls / f"{seed}.png", (40, 56), seed)
    return root


def test_training_writes_the_view_its_pipeline_matches(folder):
    cfg = load_config("bundled", ["model.name=se_resnet20", "model.overrides={layers: [1, 1, 1]}"])
    arrays = load_dataset("bundled", "train")
    _, card = build_model(cfg, arrays)  # CIFAR-style pad-and-crop of whole images: the whole image
    assert (card.crop_mode, card.crop_pct, card.interpolation) == ("squash", 1.0, "bilinear")
    assert (card.input_size, card.mean, card.std) == ((3, 32, 32), arrays.mean, arrays.std)
    assert card.eval_transform() == arrays.eval_view
    images = load_dataset(str(folder), "train", image_size=32)
    cfg = load_config("bundled", ["model.name=se_resnet20", "model.overrides={layers: [1, 1, 1]}",
                                  f"data.dataset={folder}"])
    _, card = build_model(cfg, images)  # the Inception random-size crop: resize to 36, centre 32
    assert (card.crop_mode, card.crop_pct, card.interpolation) == ("center", 0.875, "bilinear")
    assert card.eval_transform() == images.eval_view and card.eval_transform().geometry(32, 32).resize == (36, 36)


@pytest.fixture(scope="module")
def checkpoint(folder, tmp_path_factory):
    """A small network whose card says it trained on ``folder`` at 32 px (the centre-crop view)."""
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=2)
    card = model.pretrained_cfg.with_view(EvalView.centre_crop((3, 32, 32), (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)))
    card = card.replace(classes=("ant", "bee"), weights="trained", dataset=str(folder))
    run = tmp_path_factory.mktemp("run")
    save_checkpoint(run, "best", model, CheckpointMeta(card.to_dict(), 1, 50.0), {"epoch": 1, "history": []})
    return run


def test_eval_predict_export_and_calibration_build_the_same_view_from_one_card(checkpoint, folder, tmp_path):
    card = load_checkpoint(checkpoint).card
    view = card.eval_transform()
    assert view == EvalView.from_config(card) and view.crop_mode == "center"  # what the card says, at 32 px too
    data = card_dataset(card)  # senet eval and senet excitations
    assert data.eval_view == view
    image = folder / "val" / "ant" / "3.png"
    x_eval, _ = data[0]
    assert torch.equal(load_image(image, card), x_eval)  # senet predict feeds the very same input
    assert torch.equal(x_eval, view(decode_image(image)))
    calibration, _ = dataset_tensors(card_dataset(card, split="test"))  # senet quantize
    assert torch.equal(calibration[0], x_eval)
    result = senet.export(checkpoint, tmp_path / "m.pt", "torchscript")  # senet export's check
    assert result.view == view and check_view(card, card.input_size) == view
    # None of them resized the whole 40x56 image, which a size threshold would have done.
    whole = card.replace(crop_mode="squash", crop_pct=1.0).eval_transform()
    assert not torch.allclose(x_eval, whole(decode_image(image)))


@pytest.mark.parametrize("input_size", [(3, 32, 32), (3, 224, 224), (3, 32, 48)], ids=["32", "224", "32x48"])
@pytest.mark.parametrize("mode", [("center", 0.875), ("squash", 1.0)], ids=["centre", "whole"])
def test_the_card_of_se_resnet20_and_the_view_eval_uses_agree(folder, input_size, mode):
    card = senet.create_model("se_resnet20", num_classes=2).pretrained_cfg.replace(
        input_size=input_size, crop_mode=mode[0], crop_pct=mode[1], mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3),
        classes=("ant", "bee"), weights="trained", dataset=str(folder))
    arrays = card_dataset(card.replace(classes=None), "synthetic:20:3x40x56")
    for data in (card_dataset(card), arrays):  # an image folder, and arrays
        used = data.eval_view
        for field in ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std"):
            assert getattr(used, field) == card[field], field
        x, _ = next(iter(make_loader(data, 4, train=False, num_workers=0)))
        assert x.shape[1:] == input_size
    x, _ = next(iter(make_loader(arrays, 4, train=False)))
    torch.testing.assert_close(x, card.eval_transform()(arrays.images[:4]))


# --- cards from older versions, and local weights files --------------------------------------------

OLD_CARD = {"name": "se_resnet20", "overrides": {"num_classes": 10}, "num_classes": 10, "in_chans": 3,
            "input_size": [3, 32, 32], "mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26], "crop_pct": 0.875,
            "interpolation": "bilinear", "classes": None, "classifier": "fc", "weights": "trained",
            "weights_tag": None, "hub_id": None, "url": None, "retrofit": None, "dataset": "bundled",
            "data_root": None, "dataset_name": "CIFAR-10 subset (5,590 train / 500 test)"}


@pytest.mark.parametrize("fields,view", [
    ({}, ("squash", 1.0)),                                     # trained on arrays: whole images
    ({"dataset": "synthetic:96:3x8x8"}, ("squash", 1.0)),
    ({"dataset": "/data/my_photos"}, ("center", 0.875)),       # an image folder: the random-size crop's view
    ({"weights": "published", "dataset": None, "crop_pct": 0.95}, ("center", 0.95)),
])
def test_cards_written_before_crop_mode_get_the_view_their_training_matched(fields, view):
    card = ModelCard.from_dict({**OLD_CARD, **fields})
    assert (card.crop_mode, card.crop_pct) == view
    meta = CheckpointMeta.from_dict({"format": 2, "card": {**OLD_CARD, **fields}, "epoch": 3})
    assert ModelCard.from_dict(meta.card) == card
    assert ModelCard.from_dict(card.to_dict()) == card  # new cards write crop_mode


def test_a_local_file_gets_a_published_view_and_names_only_when_it_is_a_copy_of_them(tmp_path):
    from safetensors.torch import save_file

    weights = senet.create_model("resnet18").state_dict()
    unknown, copy = tmp_path / "my_finetune.safetensors", tmp_path / "resnet18.a1_in1k.safetensors"
    for path in (unknown, copy):
        save_file(weights, str(path))
    published = senet.models.registry.get_model_spec("resnet18").pretrained[0]
    assert (published.crop_pct, published.interpolation) != (0.875, "bilinear")  # so the two cards differ
    card = senet.create_model("resnet18", pretrained=str(copy)).pretrained_cfg
    assert (card.crop_pct, card.interpolation, card.weights) == (published.crop_pct, published.interpolation, "file")
    assert card.classes is not None and len(card.classes) == 1000
    card = senet.create_model("resnet18", pretrained=str(unknown)).pretrained_cfg
    assert (card.crop_pct, card.crop_mode, card.interpolation, card.classes) == (0.875, "center", "bilinear", None)
    assert card.weights == "file" and card.weights_tag == str(unknown)


def test_write_image_folder_round_trips_the_pixels(tmp_path):
    data = load_dataset("bundled", "test")
    root = write_image_folder(data, tmp_path / "f", "test", limit=12)
    write_image_folder(load_dataset("bundled", "train"), root, "train", limit=40)
    folder = load_dataset(str(root), "test", image_size=32)
    assert len(folder) == 12
    path, label = folder.samples[0]
    index = int(path.stem)
    assert torch.equal(decode_image(path), data.images[index])
    assert folder.classes[label] == data.classes[int(data.labels[index])]


# --- the accuracy the view is for (slow tier) --------------------------------------------------------

@pytest.mark.slow
def test_the_view_the_card_names_beats_the_other_view_on_a_network_trained_on_a_folder(tmp_path):
    """An SE network trained a few epochs on a folder export of the bundled CIFAR-10 images (32 px,
    the Inception random-size crop) is evaluated through the view its card names and through the
    other candidate view (the whole image), on the same checkpoint: the card's must be better. A
    view rule that ignores the card (the side threshold of older versions) fails here."""
    from senet.analysis.evaluate import evaluate
    from senet.train import Reporter, fit

    train, test = load_dataset("bundled", "train"), load_dataset("bundled", "test")
    root = write_image_folder(train, tmp_path / "cifar", "train", limit=3000)
    # Held out: the test split and 2,000 further training images (less noise in the comparison).
    write_image_folder(test, root, "test")
    write_image_folder(train, root, "test", limit=2000, start=3000)
    cfg = load_config("bundled", [f"data.dataset={root}", "epochs=5", "eval_batch_size=500", "data.num_workers=0",
                                  "threads=2"])
    fit(cfg, tmp_path / "run", device="cpu", reporter=Reporter())
    ckpt = load_checkpoint(tmp_path / "run")
    card = ckpt.card
    assert (card.crop_mode, card.crop_pct, card.input_size) == ("center", 0.875, (3, 32, 32))
    other = card.replace(crop_mode="squash", crop_pct=1.0)
    errors = {}
    for name, c in (("card", card), ("whole image", other)):
        errors[name] = evaluate(ckpt.model, make_loader(card_dataset(c), 500, train=False, num_workers=0))["top1_err"]
    print(f"top-1 error on 2,500 held-out images: {errors}")
    assert errors["card"] < errors["whole image"], errors
