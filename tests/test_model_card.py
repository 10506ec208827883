"""The model card: attached to every model, serialised into checkpoints, and the one evaluation view
that eval, predict and export read (docs/models.md)."""

import dataclasses
import json
import math
import subprocess
import sys

import pytest
import torch
from PIL import Image

import senet
from conftest import fill
from senet.analysis.evaluate import card_dataset
from senet.cli import main
from senet.data.images import decode_image
from senet.data.transforms import eval_view, resize_center_crop
from senet.deploy.predict import load_image, predict_paths
from senet.models.card import ModelCard, RetrofitSpec
from senet.factory import load_checkpoint
from senet.weights.checkpoint import CheckpointMeta, read_weights, save_checkpoint
from senet.weights.pretrained import IMAGENET_MEAN, IMAGENET_STD, imagenet_classes


def _photo(path, size=(180, 140), seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8)
    pixels[: size[1] // 2] //= 3  # some structure, so that crops and interpolations differ
    Image.fromarray(pixels.numpy()).save(path)
    return path


def test_every_model_carries_a_card_with_timm_names():
    model = senet.create_model("se_resnet20", num_classes=7, layers=(1, 1, 1))
    card = model.pretrained_cfg
    assert isinstance(card, ModelCard) and model.default_cfg is card
    assert (card.name, card.num_classes, card.in_chans, card.input_size) == ("se_resnet20", 7, 3, (3, 32, 32))
    assert card.weights == "random" and card.classes is None and card.overrides == {"num_classes": 7, "layers": (1, 1, 1)}
    # timm's data config reads these keys.
    assert card["mean"] == IMAGENET_MEAN and card.get("crop_pct") == 0.875 and card["interpolation"] == "bilinear"
    assert card["input_size"] == (3, 32, 32) and card["classifier"] == "fc" and card["crop_mode"] == "center"
    assert card["architecture"] == "se_resnet20" and card.get("no_such_key", "dflt") == "dflt" and "mean" in card
    with pytest.raises(KeyError):
        card["no_such_key"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        card.mean = (0, 0, 0)
    with pytest.raises(TypeError):
        card.overrides["layers"] = (2, 2, 2)
    grey = senet.create_model("resnet20", in_chans=1).pretrained_cfg
    assert grey.input_size == (1, 32, 32) and len(grey.mean) == len(grey.std) == 1
    assert senet.create_model("se_resnet20", num_classes=0).pretrained_cfg.num_classes == 0


def test_card_round_trips_through_json_and_rebuilds_the_network():
    se = senet.SEConfig(reduction=4, stages=(2, 3))
    card = senet.create_model("resnet20", se=se, layers=(1, 1, 1)).pretrained_cfg.replace(
        classes=("a", "b"), retrofit=RetrofitSpec.from_mapping({"conv_activations": True, "se": {"reduction": 8}}),
        weights="trained", dataset="synthetic:64:3x8x8")
    again = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert again == card and again.overrides["se"] == se and again.retrofit.se == {"reduction": 8}
    model = again.build()
    assert model.pretrained_cfg is again and model.default_cfg is again
    assert sum(isinstance(m, senet.SqueezeExcite) for m in model.modules()) > 3  # SE stages + retrofitted blocks
    with pytest.raises(ValueError, match="unknown key"):
        ModelCard.from_dict({**card.to_dict(), "colour": "red"})
    with pytest.raises(ValueError, match="interpolation"):
        card.replace(interpolation="lanczos")
    with pytest.raises(ValueError, match="mean/std need 3"):
        card.replace(mean=(0.5,))


def test_eval_view_resizes_with_the_cards_interpolation_and_crop():
    img = torch.rand(3, 150, 200)
    card = ModelCard("se_resnet50", crop_pct=0.95, interpolation="bicubic")
    x = card.eval_transform()(img)
    assert x.shape == (3, 224, 224)
    by_hand = resize_center_crop(img, 224, 0.95, "bicubic")  # shorter side floor(224 / 0.95) = 235, centred 224
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x, (by_hand - mean) / std)
    # Another crop or interpolation gives another input: the card's values are the ones used.
    assert not torch.allclose(x, card.replace(crop_pct=0.875).eval_transform()(img))
    assert not torch.allclose(x, card.replace(interpolation="bilinear").eval_transform()(img))
    # uint8 images (as decoded) are scaled to [0, 1] first.
    u8 = (img * 255).round().to(torch.uint8)
    torch.testing.assert_close(card.eval_transform()(u8), card.eval_transform()(u8.float() / 255))
    # A card with the whole-image view (CIFAR networks, trained on whole images) resizes the whole image,
    # at any size: the card's crop mode decides, not the input side.
    small = ModelCard("se_resnet20", input_size=(3, 32, 32), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0,
                      crop_mode="squash")
    whole = torch.nn.functional.interpolate(img[None], size=(32, 32), mode="bilinear", antialias=True)[0]
    torch.testing.assert_close(small.eval_transform()(img), (whole.clamp(0, 1) - 0.5) / 0.5)
    # One-channel networks get the luma of a colour image.
    grey = eval_view(torch.ones(3, 8, 8), input_size=(1, 8, 8), mean=(0.0,), std=(1.0,))
    torch.testing.assert_close(grey, torch.ones(1, 8, 8))


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    """A se_resnet50 weights file in timm's layout (its own state_dict, deterministic values)."""
    from safetensors.torch import save_file

    model = senet.create_model("se_resnet50")
    sd = {k: fill(k, tuple(v.shape)) for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("weights") / "seresnet50.a1_in1k.safetensors"
    save_file(sd, str(path))
    return path


def test_predict_with_published_weights_prints_imagenet_names_with_their_view(timm_file, tmp_path, capsys):
    img = _photo(tmp_path / "img.png")
    model = senet.create_model("se_resnet50", pretrained=str(timm_file))
    card = model.pretrained_cfg
    assert (card.crop_pct, card.interpolation, card.mean, card.std) == (0.95, "bicubic", IMAGENET_MEAN, IMAGENET_STD)
    assert card.classes == imagenet_classes() and card.weights == "file" and card.weights_tag == str(timm_file)
    assert main(["predict", "--set", f"pretrained={timm_file}", "se_resnet50", str(img), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    printed = [(line.split("%  ")[1], float(line.split("%")[0])) for line in lines[1:]]
    # The reference: the decoded image through the weights' view (0.95, bicubic, ImageNet statistics).
    x = eval_view(decode_image(img), input_size=(3, 224, 224), crop_pct=0.95, interpolation="bicubic",
                  mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with torch.no_grad():
        probs = model.eval()(x[None]).softmax(1)[0]
    top = probs.topk(3)
    assert [name for name, _ in printed] == [imagenet_classes()[i] for i in top.indices.tolist()]
    assert [p for _, p in printed] == pytest.approx((100 * top.values).tolist(), abs=0.006)
    assert not any(name.isdigit() for name, _ in printed)


@pytest.fixture(scope="module")
def folder_checkpoint(tmp_path_factory):
    """A hand-saved checkpoint of a small network at 128 px, trained (so its card says) on an
    image folder whose test split holds one image."""
    root = tmp_path_factory.mktemp("folder")
    for split, cls, seed in (("train", "ant", 1), ("train", "bee", 2), ("val", "bee", 3)):
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        _photo(root / split / cls / f"{seed}.png", size=(200, 150), seed=seed)
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=2)
    for m in model.modules():  # distinct BN statistics, so that eval mode matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    card = model.pretrained_cfg.replace(classes=("ant", "bee"), input_size=(3, 128, 128), mean=(0.4, 0.5, 0.6),
                                        std=(0.2, 0.25, 0.3), weights="trained", dataset=str(root))
    run = root / "run"
    save_checkpoint(run, "best", model, CheckpointMeta(card.to_dict(), 3, 50.0), {"epoch": 3, "history": []})
    return run, root / "val" / "bee" / "3.png"


def test_eval_and_predict_feed_the_same_input_and_get_the_same_logits(folder_checkpoint, capsys):
    run, image = folder_checkpoint
    ckpt = load_checkpoint(run)
    assert ckpt.verified and ckpt.meta.epoch == 3 and not ckpt.model.training
    data = card_dataset(ckpt.card)  # what senet eval evaluates
    x_eval, label = data[0]
    x_predict = load_image(image, ckpt.card)  # what senet predict feeds
    assert x_eval.shape == (3, 128, 128) and torch.equal(x_eval, x_predict)
    with torch.no_grad():
        logits = ckpt.model(x_eval[None])[0]
    # The printed numbers agree: eval's loss is -log p(label) of predict's probability.
    assert main(["predict", str(run), str(image), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    probs = {line.split("%  ")[1]: float(line.split("%")[0]) / 100 for line in out[1:]}
    assert probs["bee"] == pytest.approx(logits.softmax(0)[label].item(), abs=6e-5)
    assert main(["eval", "--checkpoint", str(run)]) == 0
    out = capsys.readouterr().out
    loss = float(out.split("loss ")[1].split()[0])
    assert loss == pytest.approx(-math.log(logits.softmax(0)[label].item()), abs=6e-5)
    assert f"checkpoint: {run / 'checkpoints/best.safetensors'} (verified)" in out
    assert predict_paths(run, [image])[0].top[0][1] == ckpt.card.classes[int(logits.argmax())]


def test_export_reads_the_input_size_from_the_card(folder_checkpoint, tmp_path):
    run, _ = folder_checkpoint
    result = senet.export(run, tmp_path / "m.pt", "torchscript")
    assert result.input_size == (3, 128, 128)


def test_checkpoints_written_before_the_card_still_load(folder_checkpoint, tmp_path):
    from safetensors.torch import save_file

    run, image = folder_checkpoint
    tensors, meta = read_weights(run / "checkpoints/best.safetensors")
    old = {"model": "se_resnet20", "overrides": {"layers": [1, 1, 1], "num_classes": 2}, "classes": ["ant", "bee"],
           "mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "input_size": [3, 128, 128],
           "dataset": "image folder x", "data": {"dataset": meta.card["dataset"], "root": None}, "epoch": 3,
           "top1_err": 50.0}
    path = tmp_path / "old.safetensors"
    save_file(tensors, str(path), metadata={"senet": json.dumps(old)})  # no hash: the oldest format
    ckpt = load_checkpoint(path)
    assert not ckpt.verified and ckpt.meta.epoch == 3 and ckpt.meta.top1_err == 50.0
    card = ckpt.card
    assert (card.name, card.classes, card.input_size, card.dataset_name) == (
        "se_resnet20", ("ant", "bee"), (3, 128, 128), "image folder x")
    written = ModelCard.from_dict(meta.card)
    assert card.overrides == written.overrides and card.mean == written.mean
    x = load_image(image, card)
    torch.testing.assert_close(ckpt.model(x[None]), load_checkpoint(run).model(x[None]))


SERVING = ["senet.inference", "senet.deploy.inference", "senet.deploy.fast", "senet.deploy.predict", "senet.deploy.export",
           "senet.analysis",
           "senet.analysis.evaluate", "senet.analysis.excitation_study", "senet.analysis.datacheck", "senet.weights.checkpoint",
           "senet.cli.eval", "senet.cli.predict", "senet.cli.export", "senet.cli.excitations", "senet.cli.summary",
           "senet.cli.models", "senet.cli.benchmark"]


def test_serving_modules_do_not_import_training():
    # One fresh interpreter: after each import, no senet.train module may be loaded (the first
    # module that loads one is named).
    code = ("import importlib, sys\n"
            f"for module in {SERVING!r}:\n"
            "    importlib.import_module(module)\n"
            "    bad = sorted(m for m in sys.modules if m == 'senet.train' or m.startswith('senet.train.'))\n"
            "    assert not bad, (module, bad)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_serving_at_work_does_not_import_training(folder_checkpoint, tmp_path):
    run, image = folder_checkpoint
    code = f"""
import sys
from senet.analysis.evaluate import card_dataset, evaluate
from senet.analysis.datacheck import checkpoint_data_mismatch
from senet.data import make_loader
from senet.deploy.predict import predict_paths
from senet.factory import load_checkpoint
import senet
ckpt = load_checkpoint({str(run)!r})
data = card_dataset(ckpt.card)
checkpoint_data_mismatch(ckpt.card, data)
evaluate(ckpt.model, make_loader(data, 4, train=False))
predict_paths({str(run)!r}, [{str(image)!r}])
senet.export({str(run)!r}, {str(tmp_path / 'm.pt')!r}, 'torchscript')
bad = sorted(m for m in sys.modules if m == 'senet.train' or m.startswith('senet.train.'))
assert not bad, bad
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
