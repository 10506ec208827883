"""torch.fx: every family traces with ``symbolic_trace``, and a traced graph sliced at a
``feature_info`` level gives that level's map (feature extraction with plain torch.fx)."""

from __future__ import annotations

import pytest
import torch
import torch.fx

import senet
from small_models import family_cases, small_model

CASES = family_cases()


@pytest.mark.parametrize("name,overrides", CASES, ids=[c[0] for c in CASES])
def test_symbolic_trace_gives_the_models_output(name, overrides):
    model, side = small_model(name, overrides)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, model.in_chans, side, side)
    with torch.no_grad():
        # The traced graph takes the general SE form (no 1x1 matrix-product shortcut), so it
        # agrees to rounding, not bit for bit.
        torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-5)
    # The input check is one call in the graph, so it still runs on the real input.
    with pytest.raises(ValueError, match="expects an"):
        traced(torch.randn(2, model.in_chans + 1, side, side))


def test_symbolic_trace_under_no_grad():
    # Inference mode takes an in-place path in eager mode that a trace must not branch into.
    model = senet.create_model("se_resnet20", num_classes=4).eval()
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(model)
        x = torch.randn(2, 3, 32, 32)
        torch.testing.assert_close(traced(x), model(x), rtol=1e-4, atol=1e-5)


class LevelTracer(torch.fx.Tracer):
    """Keeps the modules named in ``leaves`` as single calls, so their outputs are graph nodes."""

    def __init__(self, leaves: set[str]) -> None:
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, m: torch.nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def extract(model: torch.nn.Module, modules: list[str]) -> torch.fx.GraphModule:
    """A graph module returning the outputs of ``modules``, cut after the deepest of them."""
    graph = LevelTracer(set(modules)).trace(model)
    out = torch.fx.Graph()
    env: dict[torch.fx.Node, torch.fx.Node] = {}
    taps: dict[str, torch.fx.Node] = {}
    for node in graph.nodes:
        if node.op == "output":
            break
        env[node] = out.node_copy(node, lambda a: env[a])
        if node.op == "call_module" and node.target in modules:
            taps[node.target] = env[node]
        if len(taps) == len(modules):
            break
    assert set(taps) == set(modules), f"levels not found in the graph: {set(modules) - set(taps)}"
    out.output([taps[m] for m in modules])
    return torch.fx.GraphModule(model, out)


def test_fx_feature_extraction_matches_forward_intermediates():
    model, side = small_model("se_resnet50", {"layers": (1, 1, 1, 1), "num_classes": 5})
    names = model.feature_info.module_name()
    wanted = names[1:3]  # layer1 and layer2
    extractor = extract(model, wanted)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = extractor(x)
        expected = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert [m.shape[1] for m in maps] == model.feature_info.channels([1, 2])
    for got, want in zip(maps, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    # The graph was cut after layer2: later stages and the head are not part of it.
    kept = {n for n, _ in extractor.named_parameters()}
    assert not any(n.startswith(("layer3.", "layer4.", "fc.")) for n in kept)
    assert any(n.startswith("layer2.") for n in kept)
