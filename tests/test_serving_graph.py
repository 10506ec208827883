"""The serving graph of prepare_for_inference: chosen by a rule, guarded on every dimension it was
compiled for, Inductor settings scoped, and the model's card carried."""

import pytest
import torch
from torch import nn

import senet.deploy.fast as fast
from senet import create_model
from senet.models.card import card_of


def _net():
    return create_model("se_resnet20", layers=(1, 1, 1)).eval()


class _Recorder:
    """A stand-in for the compiled graph that records the shapes it is given and runs the network."""

    def __init__(self, net):
        self.net, self.shapes = net, []

    def __call__(self, x):
        self.shapes.append((tuple(x.shape), x.dtype))
        return self.net(x)


@pytest.fixture
def recorded(monkeypatch):
    made = []

    def fake_compile(net, recompile=True, fullgraph=False):
        made.append(_Recorder(net))
        return made[-1]

    monkeypatch.setattr(fast, "compile_frozen", fake_compile)
    return made


def test_auto_compiles_a_registered_network_by_the_rule_not_by_a_timing(recorded, monkeypatch):
    monkeypatch.setattr(fast, "inductor_available", lambda: True)
    monkeypatch.setattr(fast, "latency_ms", lambda *a, **k: pytest.fail("no timing inside the call"))
    prepared = fast.prepare_for_inference(_net(), 2, compile="auto")
    assert prepared.inference_report.compiled and len(recorded) == 1
    assert "registered network" in prepared.inference_report.compile_reason
    monkeypatch.setattr(fast, "inductor_available", lambda: False)
    prepared = fast.prepare_for_inference(_net(), 2, compile="auto")
    assert not prepared.inference_report.compiled and len(recorded) == 1
    assert prepared.inference_report.compile_reason == "not compiled: Inductor finds no C++ compiler"


def test_auto_does_not_compile_a_network_of_the_users_own(recorded, monkeypatch):
    monkeypatch.setattr(fast, "inductor_available", lambda: True)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    prepared = fast.prepare_for_inference(net, 1, compile="auto", example=torch.randn(1, 3, 16, 16))
    assert not prepared.inference_report.compiled and not recorded
    assert "not a registered senet network" in prepared.inference_report.compile_reason


@pytest.mark.parametrize("shape,dtype", [((2, 3, 32, 32), torch.float32), ((3, 3, 32, 32), torch.float32),
                                         ((2, 3, 40, 40), torch.float32), ((2, 3, 32, 36), torch.float32)])
def test_only_the_compiled_shape_reaches_the_compiled_graph(recorded, shape, dtype):
    net = _net()
    prepared = fast.prepare_for_inference(net, 2, compile=True)
    graph = recorded[0]
    graph.shapes.clear()
    x = torch.randn(*shape, dtype=dtype)
    out = prepared(x)
    expected = [((2, 3, 32, 32), torch.float32)] if (shape, dtype) == ((2, 3, 32, 32), torch.float32) else []
    assert graph.shapes == expected
    with torch.no_grad():
        want = net(x)
    assert out.shape == want.shape and (out - want).abs().max().item() < 1e-3


def test_the_prepared_module_carries_the_models_card():
    net = _net()
    prepared = fast.prepare_for_inference(net, 1, compile=False)
    assert card_of(prepared) is not None and card_of(prepared) == card_of(net)
    assert prepared.pretrained_cfg.name == "se_resnet20"


@pytest.mark.slow
def test_a_real_compiled_graph_never_recompiles_silently():
    from torch._inductor import config as inductor_config

    net = _net()
    freezing = inductor_config.freezing
    prepared = fast.prepare_for_inference(net, 2, compile=True)
    assert inductor_config.freezing == freezing  # scoped to the compile, not set for the process
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert (prepared(x) - net(x)).abs().max().item() < 1e-3
        other = torch.randn(2, 3, 40, 40)  # another size: the folded eager network
        assert (prepared(other) - net(other)).abs().max().item() < 1e-3
    # Asked directly for another shape, the compiled graph refuses rather than compiling a second one.
    with pytest.raises(Exception, match="(?i)recompil"):
        with torch.inference_mode():
            prepared._compiled(other.contiguous(memory_format=torch.channels_last))


def test_every_prepared_network_is_compiled_past_dynamos_recompile_limit():
    from torch._dynamo import config as dynamo_config
    from torch._dynamo.utils import counters

    # Networks of one family share their forward, so each prepared network adds an entry to one
    # Dynamo cache; at the limit Dynamo would run the next one eagerly without a word.
    with dynamo_config.patch(recompile_limit=1):
        for _ in range(2):
            graphs = counters["stats"]["unique_graphs"]
            prepared = fast.prepare_for_inference(_net(), 2, compile=True)
            assert prepared.inference_report.compiled
            assert counters["stats"]["unique_graphs"] == graphs + 1  # one graph compiled for this network
        assert dynamo_config.recompile_limit == 1  # raised around the calls only


class _Breaks(nn.Module):
    """A network of the user's own whose forward Dynamo cannot trace as one graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        x = self.conv(x)
        torch._dynamo.graph_break()
        return x.mean((2, 3))


def test_a_network_compiled_in_pieces_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match=r"compile=True: Dynamo cannot compile _Breaks as one graph .*compile=False"):
        fast.prepare_for_inference(_Breaks(), 1, compile=True, example=torch.randn(1, 3, 8, 8))
    served = fast.prepare_for_inference(_Breaks(), 1, compile=False, example=torch.randn(1, 3, 8, 8))
    assert served(torch.randn(1, 3, 8, 8)).shape == (1, 4)


def test_tune_measures_what_compiles_and_says_what_does_not(tmp_path):
    from senet.deploy.tuner import tune

    lines = []
    choice = tune(_Breaks(), 1, input_size=(3, 8, 8), backends=("native",), rounds=1, threads=1,
                  path=tmp_path / "tuned.json", log=lines.append)
    assert list(choice.timings_ms) == ["native eager"] and choice.backend == "native" and not choice.compile
    assert any("native compiled: not measured: compile=True: Dynamo cannot compile _Breaks" in line for line in lines)
