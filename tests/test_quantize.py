"""INT8 quantization: PT2E for x86 with the SE gate policies, ONNX Runtime static INT8, `senet quantize`."""

import sys

import pytest
import torch
from small_models import family_cases, small_model

import senet
from senet.cli import main
from senet.deploy import quantize as q
from senet.layers.se import HardSigmoid, SqueezeExcite

pytest.importorskip("torchao", reason="INT8 quantization needs the optional torchao package")


def _calibration(side, n=3, batch=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, side, side, generator=gen) for _ in range(n)]


def _quantized_linears(program):
    """How many linear nodes of the converted graph read an INT8 (dequantized) weight."""
    return sum(1 for n in program.graph.nodes if n.target == torch.ops.aten.linear.default
               and "dequantize" in str(n.args[1].target))


@pytest.mark.parametrize("policy", q.GATE_POLICIES)
def test_gate_policies_quantize_what_they_say(policy):
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    blocks = len(q.se_blocks(model))
    quantized = q.quantize_int8(model, _calibration(side), gate_policy=policy, compile=False)
    # The classifier is INT8 in every policy; the excitation's two FCs only outside "float".
    assert _quantized_linears(quantized.program) == (1 if policy == "float" else 1 + 2 * blocks)
    x = torch.randn(4, 3, side, side)
    with torch.no_grad():
        want = model(x)
    got = quantized(x)
    assert got.shape == want.shape and torch.is_inference(got)
    if policy != "hard_sigmoid":  # the same function up to INT8 rounding (hard sigmoid is another gate)
        assert (got - want).abs().max().item() <= 0.1 * want.abs().max().item()
    assert all(isinstance(m.gate, torch.nn.Sigmoid) for m in model.modules() if isinstance(m, SqueezeExcite))


@pytest.mark.parametrize("name,overrides", [
    ("se_cifar_convnet10", {"num_classes": 5, "layers": (16, "M", 32, "M"), "mlp_width": 32}),
])
def test_other_families_quantize(name, overrides):
    model, side = small_model(name, overrides)
    quantized = q.quantize_int8(model, _calibration(side, n=2, batch=4), compile=False)
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        assert quantized(x).shape == model(x).shape == (2, 5)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides", family_cases(), ids=[n for n, _ in family_cases()])
def test_every_family_quantizes_and_agrees(name, overrides):
    model, side = small_model(name, overrides)
    quantized = q.quantize_int8(model, _calibration(side, n=2, batch=4), compile=False)
    x = torch.randn(4, 3, side, side)
    with torch.no_grad():
        want = model(x)
    assert (quantized(x) - want).abs().max().item() <= 0.25 * want.abs().max().item()


def test_swap_gate_and_finetune():
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    assert q.swap_gate(model, "hard_sigmoid") == len(q.se_blocks(model)) == 3
    assert all(isinstance(m.gate, HardSigmoid) for m in model.modules() if isinstance(m, SqueezeExcite))
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(16, 3, side, side, generator=gen), torch.randint(10, (16,), generator=gen)
    before = [p.detach().clone() for p in model.parameters()]
    loss0 = torch.nn.functional.cross_entropy(model.eval()(images), labels).item()
    q.finetune(model, images, labels, steps=4, batch_size=16, lr=0.02)
    assert not model.training and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.no_grad():
        assert torch.nn.functional.cross_entropy(model(images), labels).item() < loss0  # it learns the batch
    with pytest.raises(ValueError, match="gate='hard_sigmod'"):
        q.swap_gate(model, "hard_sigmod")


def test_top1_pads_the_last_batch_to_one_shape():
    shapes = []

    def model(x):
        shapes.append(x.shape[0])
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()  # predicts the pixel value

    labels = torch.arange(7) % 3
    images = labels.float().view(-1, 1, 1, 1).expand(7, 1, 2, 2)
    assert q.top1(model, images, labels, batch_size=4) == 100.0 and shapes == [4, 4]
    assert q.top1(model, images, (labels + 1) % 3, batch_size=4) == 0.0


def test_onnx_runtime_static_int8(tmp_path):
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    senet.export(model, tmp_path / "m.onnx", input_size=side, dynamic_batch=True)
    out = q.quantize_onnx(tmp_path / "m.onnx", tmp_path / "m8.onnx", _calibration(side))
    import onnx
    import onnxruntime

    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(out)).graph.node)
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, side, side)
    got = torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with torch.no_grad():
        want = model(x)
    assert (got - want).abs().max().item() <= 0.1 * want.abs().max().item()
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        q.quantize_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", _calibration(side))
    with pytest.raises(ValueError, match="no batches"):
        q.quantize_onnx(tmp_path / "m.onnx", tmp_path / "x.onnx", [])


def test_bad_arguments_are_named():
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    with pytest.raises(ValueError, match="gate_policy='fp32'"):
        q.quantize_int8(model, _calibration(side), gate_policy="fp32")
    with pytest.raises(ValueError, match="no batches"):
        q.quantize_int8(model, [], compile=False)
    with pytest.raises(ValueError, match="finetune_steps"):
        q.quantize_and_measure(model, torch.randn(4, 3, side, side), torch.randn(4, 3, side, side),
                               torch.zeros(4, dtype=torch.int64), finetune_steps=5)


def test_cli_quantize_reports_and_saves(tmp_path, capsys):
    out = tmp_path / "q.pt2"
    assert main(["quantize", "se_resnet20", "--set", "layers=[1,1,1]", "--calibration-images", "32",
                 "--eval-images", "20", "--batch-size", "4", "--no-compile", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "CIFAR-10 subset" in text and "policy 'float'" in text and "calibrated on 32 images" in text
    # a registered name has random weights: their accuracy would mean nothing, so only latency is reported
    assert "(random weights: latency only)" in text and "top-1 error: not measured: the weights are random" in text
    assert "top-1 on" not in text and "latency at batch 4" in text and f"wrote {out}" in text
    program = torch.export.load(str(out))  # loads back (torchao is imported) and runs at another batch size
    assert program.module()(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_cli_quantize_errors(capsys, monkeypatch):
    assert main(["quantize", "se_resnet20", "--gate", "float", "--finetune-steps", "5"]) == 2
    assert "--finetune-steps applies to --gate hard_sigmoid" in capsys.readouterr().err
    assert main(["quantize", "se_resnet20", "--calibration-images", "0"]) == 2
    assert "--calibration-images must be >= 1" in capsys.readouterr().err
    for module in [m for m in sys.modules if m == "torchao" or m.startswith("torchao.")]:
        monkeypatch.setitem(sys.modules, module, None)  # as if the extra were not installed
    assert main(["quantize", "se_resnet20", "--set", "layers=[1,1,1]", "--calibration-images", "8",
                 "--eval-images", "8", "--no-compile"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'senet[quantize]'" in err


@pytest.mark.slow
def test_compiled_int8_matches_the_reference_graph():
    model, side = small_model("se_resnet20", {"layers": (1, 1, 1)})
    calibration = _calibration(side)
    reference = q.quantize_int8(model, calibration, compile=False)
    compiled = q.quantize_int8(model, calibration, compile=True)
    x = torch.randn(8, 3, side, side)
    want = reference(x)
    assert (compiled(x) - want).abs().max().item() <= 0.05 * want.abs().max().item()


def test_importing_the_quantizer_prints_nothing_a_user_cannot_act_on():
    # A fresh process: in this one torchao may already be imported, and its import-time logging gone.
    import subprocess

    code = ("from senet.deploy.quantize import _require\n"
            "_require('torchao.quantization.pt2e.quantize_pt2e', 'INT8 quantization')\n"
            "import logging\n"
            "assert logging.getLogger('torchao').level == logging.NOTSET  # restored after the import\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
