"""Every CPU engine behind prepare_for_inference(backend=...): the same outputs within the stated
tolerance, the card carried, a missing engine named with its extra, and senet tune's recorded choice."""

import json
import sys

import pytest
import torch
from PIL import Image

import senet
import senet.deploy.fast as fast
from senet.cli import main
from senet.deploy.fast import RTOL, TOLERANCE, prepare_for_inference, serving_model
from senet.deploy.tuning import TunedChoice, read_choice, record_choice
from senet.errors import BadFileError, MissingExtraError
from senet.models.card import card_of
from senet.weights.checkpoint import CheckpointMeta, save_checkpoint

ENGINES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    __import__("importlib").util.find_spec("openvino") is None,
    reason="openvino is not installed (pip install 'senet[openvino]')"))]


def _net():
    return senet.create_model("se_resnet20", layers=(1, 1, 1)).eval()


@pytest.fixture(autouse=True)
def _tune_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SENET_TUNE_FILE", str(tmp_path / "tuned.json"))
    return tmp_path / "tuned.json"


@pytest.mark.parametrize("backend", ENGINES)
def test_an_engine_gives_eagers_outputs_and_carries_the_card(backend):
    net = _net()
    x = torch.randn(2, 3, 32, 32)
    prepared = prepare_for_inference(net, 2, backend=backend, example=x, threads=1)
    report = prepared.inference_report
    assert report.backend == backend and not report.compiled and report.threads == 1
    assert card_of(prepared) == card_of(net)
    calls = []
    graph = prepared._compiled
    object.__setattr__(prepared, "_compiled", lambda t: calls.append(tuple(t.shape)) or graph(t))
    with torch.no_grad():
        for batch in (x, torch.randn(3, 3, 32, 32), torch.randn(2, 3, 40, 40)):
            want = net(batch)
            got = prepared(batch)
            assert (got - want).abs().max().item() <= TOLERANCE + RTOL * want.abs().max().item()
    # ONNX Runtime takes any batch of the prepared image size, OpenVINO's static graph only batch 2;
    # the 40x40 images run the folded network.
    assert calls == ([(2, 3, 32, 32), (3, 3, 32, 32)] if backend == "onnxruntime" else [(2, 3, 32, 32)])
    assert backend in report.summary()


def test_a_missing_engine_is_named_with_its_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'senet\[openvino\]'"):
        prepare_for_inference(_net(), 1, backend="openvino")


@pytest.mark.parametrize("kwargs,match", [
    ({"backend": "tensorrt"}, "backend='tensorrt' is not supported"),
    ({"backend": "onnxruntime", "compile": True}, "compile=True and se_fold=True apply to backend=.native."),
    ({"backend": "tuned", "compile": False}, "takes compile and se_fold from the recorded choice"),
    ({"threads": 0}, "threads must be a positive integer"),
])
def test_conflicting_or_bad_backend_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        prepare_for_inference(_net(), 1, **kwargs)


def test_tuned_without_a_record_names_the_command_to_run():
    with pytest.raises(ValueError, match=r"nothing recorded for se_resnet20\[layers=\(1, 1, 1\)\] .*senet tune "
                                         r"se_resnet20 --batch-size 2 --input-size 3x32x32 --threads 2 with the same"):
        prepare_for_inference(_net(), 2, backend="tuned", threads=2)


def _choice(backend, timings, threads=2, batch=2, compile=False):
    return TunedChoice("se_resnet20[layers=(1, 1, 1)]", batch, (3, 32, 32), threads, backend, compile, False,
                       timings, 3, 0.1, 0.1, torch.__version__, "test", "2026-01-01T00:00:00+00:00")


def test_tuned_serves_the_recorded_backend(_tune_file):
    record_choice(_choice("onnxruntime", {"native eager": 5.0, "onnxruntime": 2.0}))
    prepared = prepare_for_inference(_net(), 2, backend="tuned", threads=2)
    assert prepared.inference_report.backend == "onnxruntime" and prepared.inference_report.tuned
    assert "as recorded by senet tune" in prepared.inference_report.summary()
    # Another thread count or batch size is another measurement: nothing recorded for it.
    with pytest.raises(ValueError, match="nothing recorded"):
        prepare_for_inference(_net(), 2, backend="tuned", threads=1)
    assert read_choice("se_resnet20[layers=(1, 1, 1)]", 2, (3, 32, 32), 2).timings_ms == {
        "native eager": 5.0, "onnxruntime": 2.0}


def test_compile_auto_follows_the_recorded_native_choice(monkeypatch):
    compiled = []
    monkeypatch.setattr(fast, "inductor_available", lambda: True)
    monkeypatch.setattr(fast, "compile_frozen", lambda net, recompile=True, fullgraph=False: compiled.append(net) or net)
    record_choice(_choice("openvino", {"native eager": 3.0, "native compiled": 4.0, "openvino": 1.0}))
    prepared = prepare_for_inference(_net(), 2, compile="auto", threads=2)
    assert not prepared.inference_report.compiled and not compiled
    assert prepared.inference_report.compile_reason == "compile off as recorded by senet tune"
    prepared = prepare_for_inference(_net(), 2, compile="auto", threads=1)  # nothing recorded: the rule
    assert prepared.inference_report.compiled and len(compiled) == 1


def test_a_broken_tune_file_is_named(_tune_file):
    _tune_file.write_text("{not json")
    with pytest.raises(BadFileError, match="tuned.json is not a senet tune file"):
        prepare_for_inference(_net(), 2, backend="tuned")


def test_serving_refuses_an_engine_where_it_cannot_serve():
    net = _net()
    with pytest.raises(ValueError, match="cannot run the network as loaded"):
        serving_model(net, "cpu", 2, fast=False, backend="onnxruntime")
    with pytest.raises(ValueError, match="cannot serve this network"):
        serving_model(torch.nn.Sequential(torch.nn.Flatten()), "cpu", 2, backend="onnxruntime")
    with pytest.raises(ValueError, match="compile on applies to the native backend"):
        serving_model(net, "cpu", 2, compile=True, backend="onnxruntime")


def test_senet_tune_records_the_fastest_and_tuned_serves_it(tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["tune", "se_resnet20", "--set", "layers=[1,1,1]", "--batch-size", "2", "--rounds", "1",
                 "--threads", "1", "--backends", "native", "onnxruntime", "--no-compile", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fastest: " in text and f"recorded in {out}" in text
    entry = json.loads(out.read_text())["choices"]["se_resnet20[layers=(1, 1, 1)] batch=2 size=3x32x32 threads=1"]
    assert set(entry["timings_ms"]) == {"native eager", "onnxruntime"}
    fastest = min(entry["timings_ms"], key=entry["timings_ms"].get)
    assert entry["backend"] == ("onnxruntime" if fastest == "onnxruntime" else "native")
    prepared = prepare_for_inference(_net(), 2, backend="tuned", threads=1, tune_path=out)
    assert prepared.inference_report.backend == entry["backend"]


@pytest.mark.parametrize("backend", ENGINES)
def test_predict_with_a_backend_agrees_with_native(tmp_path, capsys, backend):
    torch.manual_seed(0)
    model = senet.create_model("se_resnet20", layers=(1, 1, 1), num_classes=4)
    card = model.pretrained_cfg.replace(classes=("ant", "bee", "cat", "dog"), input_size=(3, 16, 16),
                                        mean=(0.5,) * 3, std=(0.25,) * 3, weights="trained")
    weights, _ = save_checkpoint(tmp_path / "ckpt", "last", model, CheckpointMeta(card.to_dict(), 1), {})
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pixels = torch.randint(0, 256, (16, 16, 3), generator=torch.Generator().manual_seed(i), dtype=torch.uint8)
        Image.fromarray(pixels.numpy()).save(tmp_path / "imgs" / f"{i}.png")
    rows = {}
    for b in ("native", backend):
        out = tmp_path / f"{b}.json"
        assert main(["predict", str(weights), str(tmp_path / "imgs"), "--batch-size", "2", "--backend", b,
                     "--out", str(out)]) == 0
        rows[b] = json.loads(out.read_text())
    capsys.readouterr()
    assert [[r["class"] for r in p["top"]] for p in rows["native"]] == \
        [[r["class"] for r in p["top"]] for p in rows[backend]]
    for p, q in zip(rows["native"], rows[backend]):
        assert [r["probability"] for r in p["top"]] == pytest.approx([r["probability"] for r in q["top"]], abs=1e-5)


@pytest.mark.slow  # trains a network for a second, on a loaded 2-core machine about ten
def test_eval_with_onnxruntime_reports_natives_error(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--model", "se_resnet20", "--data", "synthetic:64:3x16x16", "--batch-size", "32",
                 "--set", "model.overrides.layers=[1,1,1]", "--set", "eval_batch_size=32", "--epochs", "1",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    lines = {}
    for backend in ("native", "onnxruntime"):
        assert main(["eval", str(run), "--batch-size", "16", "--backend", backend]) == 0
        lines[backend] = [line for line in capsys.readouterr().out.splitlines() if "top-1 error" in line]
    assert lines["native"] == lines["onnxruntime"] and len(lines["native"]) == 1
    assert main(["eval", str(run), "--eager", "--backend", "onnxruntime"]) == 2
    assert "serves on the CPU; it cannot run the network as loaded" in capsys.readouterr().err
