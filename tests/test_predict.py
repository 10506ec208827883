"""Batch prediction: inputs expanded from files, folders and globs; batches; CSV/JSON; skipped images."""

import csv
import json

import pytest
import torch
from PIL import Image

import senet
from senet.cli import main
from senet.deploy.predict import expand_inputs, predict_paths
from senet.weights.checkpoint import CheckpointMeta, save_checkpoint

CLASSES = ["ant", "bee", "cat", "dog"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=4)
    card = model.pretrained_cfg.replace(classes=tuple(CLASSES), input_size=(3, 16, 16), mean=(0.5,) * 3,
                                        std=(0.25,) * 3, weights="trained")
    weights, _ = save_checkpoint(root, "last", model, CheckpointMeta(card.to_dict(), 1), {})
    return weights, model.eval()


def _images(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i)
        pixels = torch.randint(0, 256, (16, 16, 3), generator=g, dtype=torch.uint8).numpy()
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_expand_files_folders_globs(tmp_path):
    a = _images(tmp_path / "a", 2)
    b = _images(tmp_path / "a" / "deep" / "b", 2, start=2)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    c = _images(tmp_path / "c", 2, start=4)
    got = expand_inputs([tmp_path / "a", str(tmp_path / "c" / "*.png"), a[0]])
    assert got == sorted(a + b) + c  # folder recursive and sorted, glob sorted, duplicate kept once
    assert expand_inputs([str(tmp_path / "**" / "img3.png")]) == [b[1]]
    with pytest.raises(FileNotFoundError, match="no such image file or folder"):
        expand_inputs([tmp_path / "missing.png"])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_inputs([str(tmp_path / "*.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no image files"):
        expand_inputs([tmp_path / "empty"])


def test_batches_give_the_same_predictions_as_one_pass(tmp_path, checkpoint):
    weights, model = checkpoint
    paths = _images(tmp_path / "imgs", 5)
    one = predict_paths(weights, [tmp_path / "imgs"], top_k=3, batch_size=64)
    small = predict_paths(weights, [tmp_path / "imgs"], top_k=3, batch_size=2)
    assert [p.path for p in one] == [str(p) for p in paths]
    assert [[i for i, _, _ in p.top] for p in one] == [[i for i, _, _ in p.top] for p in small]
    for a, b in zip(one, small):
        assert [v for *_, v in a.top] == pytest.approx([v for *_, v in b.top], abs=1e-6)
    # The reference: the model on the images normalised with the checkpoint's statistics.
    x = torch.stack([torch.from_numpy(__import__("numpy").array(Image.open(p))).permute(2, 0, 1).float() / 255
                     for p in paths])
    with torch.no_grad():
        probs = model((x - 0.5) / 0.25).softmax(1)
    top = probs.topk(3, 1)
    assert [[i for i, _, _ in p.top] for p in one] == top.indices.tolist()
    assert [[n for _, n, _ in p.top] for p in one] == [[CLASSES[i] for i in row] for row in top.indices.tolist()]


def test_cli_folder_glob_out_and_skipped_image(tmp_path, checkpoint, capsys):
    weights, _ = checkpoint
    good = _images(tmp_path / "imgs", 3)
    bad = tmp_path / "imgs" / "sub" / "broken.png"
    bad.parent.mkdir()
    bad.write_bytes(b"not a png at all")
    out = tmp_path / "preds.csv"
    # The issue: a folder that exists was "image not found"; now it is searched recursively.
    rc = main(["predict", str(weights), str(tmp_path / "imgs"), "--top-k", "2", "--batch-size", "2", "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 1  # something was skipped
    assert captured.err.count("skipped") == 1 and str(bad) in captured.err and "image not found" not in captured.err
    lines = captured.out.splitlines()
    assert lines[0] == f"{good[0]}:" and len(lines) == 3 * 3
    assert all(line.split("%  ")[1] in CLASSES for line in lines if line.startswith("  "))
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 3 * 2 and [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert {r["path"] for r in rows} == {str(p) for p in good} and all(r["class"] in CLASSES for r in rows)

    js = tmp_path / "preds.json"
    assert main(["predict", str(weights), str(tmp_path / "imgs" / "*.png"), "--out", str(js), "--top", "3"]) == 0
    data = json.loads(js.read_text())
    assert [d["path"] for d in data] == [str(p) for p in good]
    assert all(len(d["top"]) == 3 and abs(sum(t["probability"] for t in d["top"]) - 1) < 1 for d in data)
    capsys.readouterr()
    # The old form with --checkpoint still works.
    assert main(["predict", "--checkpoint", str(weights), str(good[0])]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{good[0]}:"


def test_errors_are_one_line(tmp_path, checkpoint, capsys):
    weights, _ = checkpoint
    img = _images(tmp_path, 1)[0]
    assert main(["predict", str(weights), str(tmp_path / "nope.png")]) == 2
    assert "no such image file or folder" in capsys.readouterr().err
    assert main(["predict", str(weights), str(img), "--out", str(tmp_path / "p.txt")]) == 2
    assert ".csv or .json" in capsys.readouterr().err
    assert main(["predict", str(weights)]) == 2
    assert "at least one image" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top_k"):
        predict_paths(weights, [img], top_k=0)


def test_cpu_default_is_the_folded_path_and_agrees_with_eager(tmp_path, checkpoint, monkeypatch):
    from senet.deploy import fast as fast_module

    weights, _ = checkpoint
    _images(tmp_path / "imgs", 3)
    ran = []
    real = fast_module.FastInference.forward
    monkeypatch.setattr(fast_module.FastInference, "forward", lambda self, x: ran.append(self) or real(self, x))
    folded = predict_paths(weights, [tmp_path / "imgs"], top_k=4)
    assert len(ran) == 1 and ran[0].net.fold_report.folded and not ran[0].inference_report.compiled
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in ran[0].modules())
    eager = predict_paths(weights, [tmp_path / "imgs"], top_k=4, fast=False)
    assert len(ran) == 1  # fast=False runs the network as loaded
    for a, b in zip(folded, eager):
        assert [i for i, _, _ in a.top] == [i for i, _, _ in b.top]
        assert [v for *_, v in a.top] == pytest.approx([v for *_, v in b.top], abs=1e-5)


def test_cli_eager_and_compile_options(tmp_path, checkpoint, capsys):
    weights, _ = checkpoint
    _images(tmp_path / "imgs", 2)
    assert main(["predict", str(weights), str(tmp_path / "imgs"), "--top-k", "1"]) == 0
    folded = capsys.readouterr().out
    assert main(["predict", str(weights), str(tmp_path / "imgs"), "--top-k", "1", "--eager"]) == 0
    assert capsys.readouterr().out.split("\n")[0] == folded.split("\n")[0]
    with pytest.raises(SystemExit):
        main(["predict", str(weights), str(tmp_path / "imgs"), "--compile", "sometimes"])
    assert "--compile" in capsys.readouterr().err


def test_a_network_the_fast_path_cannot_take_runs_as_loaded_with_a_warning(tmp_path):
    from senet.deploy.fast import serving_model

    class Odd(torch.nn.Module):  # its forward refuses the random example the fast path prepares with
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x):
            if x.shape[0] != 3:
                raise RuntimeError("this network takes batches of 3")
            return self.fc(x.mean((2, 3)))

    model = Odd()
    with pytest.warns(UserWarning, match="Odd"):
        served = serving_model(model, "cpu", 2)
    assert served is model and not model.training


def test_a_failed_predict_leaves_the_users_out_file_unchanged(tmp_path, checkpoint, capsys):
    weights, _ = checkpoint
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    out = tmp_path / "preds.csv"
    out.write_text("path,rank,index,class,probability\nold.png,1,0,cat,0.9\n")
    before = out.read_bytes()
    assert main(["predict", str(weights), str(zero), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no image could be read" in err and f"{out} left as it was" in err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.csv", "zero.png"]  # no temporary file
