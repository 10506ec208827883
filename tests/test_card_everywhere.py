"""Every model object a user can hold carries a current card: exported files (ONNX metadata, the
.pt2 / TorchScript archive), the INT8 model, retrofitted networks, features_only backbones."""

import json
import zipfile

import pytest
import torch
from PIL import Image

import senet
from senet.cli import main
from senet.data import load_dataset
from senet.data import folder
from senet.data.images import decode_image
from senet.deploy.export import export
from senet.deploy.exported import CARD_FILE, CARD_KEY, CARD_VERSION, card_record, load_exported, read_card
from senet.deploy.predict import predict_paths
from senet.errors import BadFileError, UserInputError
from senet.models.card import ModelCard, card_of
from senet.models.features import FeatureBackbone
from senet import published

CLASSES = ("ant", "bee", "cat", "dog")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=4)
    with torch.no_grad():  # logits far apart, so every runtime ranks the classes alike
        net.fc.weight.mul_(30)
    card = net.pretrained_cfg.replace(classes=CLASSES, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3),
                                      interpolation="bicubic", weights="trained")
    net.pretrained_cfg = net.default_cfg = card
    return net.eval()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Three images of the bundled CIFAR-10 subset, written as PNG files (one of them not square)."""
    root = tmp_path_factory.mktemp("images")
    data = load_dataset("bundled", "test")
    paths = []
    for i in range(3):
        pixels = data.images[i].permute(1, 2, 0).numpy()
        img = Image.fromarray(pixels)
        if i == 2:
            img = img.resize((48, 40))
        paths.append(root / f"img{i}.png")
        img.save(paths[-1])
    return paths


def _eager_top(model, paths):
    """Top-2 (index, name) pairs of the eager network, each image through its card's view."""
    card = model.pretrained_cfg
    x = torch.stack([card.eval_transform()(decode_image(p)) for p in paths])
    with torch.no_grad():
        idx = model(x).topk(2, dim=1).indices.tolist()
    return [[(i, card.classes[i]) for i in row] for row in idx]


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("pt2", ".pt2")])
def test_exported_file_predicts_with_its_cards_labels_and_view(tmp_path, model, images, fmt, suffix, capsys):
    pytest.importorskip("onnxruntime")
    path = tmp_path / f"net{suffix}"
    export(model, path, fmt)
    card = read_card(path)
    assert card == model.pretrained_cfg  # class names, mean/std, size, crop and interpolation
    got = predict_paths(path, images, top_k=2)
    assert [[(i, n) for i, n, _ in p.top] for p in got] == _eager_top(model, images)
    eager = predict_paths(model, images, top_k=2, fast=False)
    for a, b in zip(got, eager):
        torch.testing.assert_close(torch.tensor([v for *_, v in a.top]), torch.tensor([v for *_, v in b.top]),
                                   atol=1e-4, rtol=1e-4)
    # the command line, as a user runs it
    assert main(["predict", str(path), *map(str, images), "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[-1] for line in out.splitlines() if "%" in line] == [t[0][1] for t in _eager_top(model, images)]


def test_the_card_is_one_versioned_json_field(tmp_path, model):
    onnx = pytest.importorskip("onnx")
    export(model, tmp_path / "net.onnx", check=False)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "net.onnx")).metadata_props}
    record = json.loads(props[CARD_KEY])
    assert record["version"] == CARD_VERSION and record["card"]["classes"] == list(CLASSES)
    assert record["card"]["mean"] == [0.5, 0.4, 0.3] and record["card"]["interpolation"] == "bicubic"
    export(model, tmp_path / "net.pt2", "pt2", check=False)
    with zipfile.ZipFile(tmp_path / "net.pt2") as z:
        name = next(n for n in z.namelist() if n.endswith(f"/extra/{CARD_FILE}"))
        assert json.loads(z.read(name)) == record


def test_an_export_at_another_size_carries_that_size(tmp_path, model, images):
    export(model, tmp_path / "net.pt", "torchscript", input_size=40)
    card = read_card(tmp_path / "net.pt")  # TorchScript archives carry it too
    assert card.input_size == (3, 40, 40) and card.classes == CLASSES and card.mean == (0.5, 0.4, 0.3)
    got = predict_paths(tmp_path / "net.pt", images, top_k=1)  # and predicts with it, at its size
    x = torch.stack([card.eval_transform()(decode_image(p)) for p in images])
    with torch.no_grad():
        top = model(x).argmax(1).tolist()  # the eager network, fed the 40x40 view
    assert [p.top[0][:2] for p in got] == [(i, CLASSES[i]) for i in top]


def test_a_file_without_a_card_is_a_clear_user_error(tmp_path, model, images):
    onnx = pytest.importorskip("onnx")
    export(model, tmp_path / "net.onnx", check=False)
    proto = onnx.load(str(tmp_path / "net.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(tmp_path / "bare.onnx"))
    program = torch.export.export(model, (torch.randn(1, 3, 32, 32),))
    torch.export.save(program, str(tmp_path / "bare.pt2"))
    for bare in ("bare.onnx", "bare.pt2"):
        with pytest.raises(BadFileError, match="carries no senet model card"):
            read_card(tmp_path / bare)
        with pytest.raises(BadFileError, match="carries no senet model card"):
            predict_paths(tmp_path / bare, images)
    (tmp_path / "junk.pt2").write_bytes(b"not an archive")
    with pytest.raises(BadFileError, match="neither an ONNX file nor"):
        read_card(tmp_path / "junk.pt2")


def test_a_newer_card_record_is_refused_by_name(tmp_path, model):
    onnx = pytest.importorskip("onnx")
    export(model, tmp_path / "net.onnx", check=False)
    proto = onnx.load(str(tmp_path / "net.onnx"))
    for p in proto.metadata_props:
        if p.key == CARD_KEY:
            p.value = json.dumps({"version": CARD_VERSION + 1, "card": {}})
    onnx.save(proto, str(tmp_path / "new.onnx"))
    with pytest.raises(BadFileError, match="version 2"):
        read_card(tmp_path / "new.onnx")
    assert json.loads(card_record(model.pretrained_cfg))["version"] == CARD_VERSION


def test_a_fixed_batch_export_takes_any_batch(tmp_path, model):
    pytest.importorskip("onnxruntime")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    for fmt, name in (("onnx", "net.onnx"), ("pt2", "net.pt2")):
        export(model, tmp_path / name, fmt, check=False)  # batch 1
        net = load_exported(tmp_path / name)
        assert card_of(net) == model.pretrained_cfg
        torch.testing.assert_close(net(x), want, atol=1e-4, rtol=1e-4)


def test_the_int8_model_and_its_file_carry_the_card(tmp_path, images):
    pytest.importorskip("torchao", reason="INT8 quantization needs the optional torchao package")
    from senet.deploy import quantize as q

    net = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=4).eval()
    net.pretrained_cfg = net.default_cfg = net.pretrained_cfg.replace(classes=CLASSES)
    calibration = [torch.randn(4, 3, 32, 32)]
    quantized = q.quantize_int8(net, calibration, compile=False)
    assert card_of(quantized) == net.pretrained_cfg
    saved = q.save_quantized(quantized, calibration[0], tmp_path / "int8.pt2")
    assert read_card(saved) == net.pretrained_cfg
    got = predict_paths(saved, images, top_k=1)  # the saved program predicts with the card's names and view
    x = torch.stack([net.pretrained_cfg.eval_transform()(decode_image(p)) for p in images])
    assert [p.top[0][:2] for p in got] == [(i, CLASSES[i]) for i in quantized(x).argmax(1).tolist()]


def test_swapping_the_gate_updates_the_card():
    from senet.deploy import quantize as q

    net = senet.create_model("se_resnet20", layers=(1, 1, 1)).eval()
    before = net.pretrained_cfg
    assert q.swap_gate(net, "hard_sigmoid") == 3
    card = card_of(net)  # the gate INT8's "hard_sigmoid" policy quantizes: card.build() builds that gate
    assert card.overrides["se_gate"] == "hard_sigmoid" and card.replace(overrides=before.overrides) == before
    gates = {type(m.gate).__name__ for m in card.build().modules() if hasattr(m, "gate") and hasattr(m, "fc1")}
    assert gates == {"HardSigmoid"}
    assert set(card.build().state_dict()) == set(net.state_dict())


def test_retrofit_updates_the_card_so_build_rebuilds_it():
    net = senet.create_model("se_resnet20", layers=(1, 1, 1), se=None).eval()
    before = net.pretrained_cfg
    senet.retrofit(net, conv_activations=True, init="identity", se=senet.SEConfig(reduction=8),
                   input_size=(3, 32, 32))
    card = net.pretrained_cfg
    assert net.default_cfg is card and card.retrofit is not None and before.retrofit is None
    assert card.retrofit.conv_activations and dict(card.retrofit.se) == {"reduction": 8}
    assert card.replace(retrofit=None) == before  # nothing else changed
    rebuilt = card.build().eval()
    assert rebuilt.load_state_dict(net.state_dict()).missing_keys == []
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x))
    assert ModelCard.from_dict(card.to_dict()) == card
    with pytest.warns(UserWarning, match="cannot record these blocks"):  # a card records one retrofit
        senet.retrofit(net, types=torch.nn.BatchNorm2d, se=None, bn=True, input_size=(3, 32, 32))
    assert net.pretrained_cfg == card


def test_retrofit_by_type_is_recorded_by_class_name():
    net = senet.create_model("se_resnet20", layers=(1, 1, 1), se=None).eval()
    senet.retrofit(net, types=torch.nn.BatchNorm2d, se=None, bn=True, input_size=(3, 32, 32))
    spec = net.pretrained_cfg.retrofit
    assert spec.types == ("BatchNorm2d",) and spec.se is None and spec.bn
    assert set(net.pretrained_cfg.build().state_dict()) == set(net.state_dict())


def test_a_features_only_card_builds_the_backbone_it_describes():
    backbone = senet.create_model("se_resnet20", layers=(1, 1, 1), features_only=True, out_indices=2)
    card = backbone.pretrained_cfg
    assert card.features_only and card.out_indices == backbone.out_indices == (1, 2)
    rebuilt = card.build()
    assert isinstance(rebuilt, FeatureBackbone) and rebuilt.out_indices == backbone.out_indices
    assert rebuilt.pretrained_cfg == card
    assert rebuilt.load_state_dict(backbone.state_dict()).missing_keys == []  # strict: the same keys
    x = torch.randn(1, 3, 32, 32)
    assert [t.shape for t in rebuilt(x)] == [t.shape for t in backbone(x)]
    assert ModelCard.from_dict(card.to_dict()) == card  # checkpoints carry it
    classifier = senet.create_model("se_resnet20").pretrained_cfg
    assert not classifier.features_only and not isinstance(classifier.build(), FeatureBackbone)
    with pytest.raises(UserInputError, match="features_only and out_indices go together"):
        classifier.replace(features_only=True)


def test_image_folders_use_the_one_copy_of_imagenets_statistics():
    assert folder.IMAGENET_MEAN is published.IMAGENET_MEAN and folder.IMAGENET_STD is published.IMAGENET_STD
    source = open(folder.__file__).read()
    assert "0.485" not in source and "0.229" not in source


def test_checkpoints_take_and_return_the_card_as_data(tmp_path):
    from senet.errors import UserTypeError
    from senet.factory import load_model, read_checkpoint_card
    from senet.weights.checkpoint import CheckpointMeta, read_weights, save_checkpoint

    backbone = senet.create_model("se_resnet20", layers=(1, 1, 1), features_only=True, out_indices=(0, 2))
    card = backbone.pretrained_cfg.replace(weights="trained")
    with pytest.raises(UserTypeError, match="card as data"):
        CheckpointMeta(card, 1)
    save_checkpoint(tmp_path, "last", backbone, CheckpointMeta(card.to_dict(), 1), {"epoch": 1, "history": []})
    file = tmp_path / "checkpoints/last.safetensors"
    meta = read_weights(file)[1]
    assert isinstance(meta.card, dict) and ModelCard.from_dict(meta.card) == card
    assert read_checkpoint_card(tmp_path) == card
    rebuilt = load_model(tmp_path)  # a backbone's checkpoint rebuilds as that backbone, weights and all
    assert isinstance(rebuilt, FeatureBackbone) and rebuilt.out_indices == (0, 2) and rebuilt.pretrained_cfg == card
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        for a, b in zip(rebuilt(x), backbone.eval()(x)):
            torch.testing.assert_close(a, b)


def test_a_retrofit_the_card_cannot_record_warns_and_keeps_the_card():
    class Custom(torch.nn.Conv2d):
        pass

    net = senet.create_model("se_resnet20", layers=(1, 1, 1), se=None).eval()
    net.conv1.__class__ = Custom  # a module class outside torch.nn
    before = net.pretrained_cfg
    with pytest.warns(UserWarning, match="not all torch.nn classes"):
        senet.retrofit(net, types=Custom, input_size=(3, 32, 32))
    assert net.pretrained_cfg == before


def test_an_exported_file_refuses_another_backend(tmp_path, model, images):
    pytest.importorskip("onnxruntime")
    export(model, tmp_path / "net.onnx", "onnx")
    with pytest.raises(UserInputError, match="runs as written"):
        predict_paths(tmp_path / "net.onnx", images, backend="onnxruntime")
