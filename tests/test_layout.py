"""The package's shape: `import senet` stays light, serving never imports training, no import cycles."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _loaded_after(code: str) -> list[str]:
    probe = code + "\nimport json, sys; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_senet_loads_no_training_data_or_plotting_module():
    loaded = _loaded_after("import senet")
    heavy = [m for m in loaded if m.startswith(("senet.train", "senet.data", "senet.experiments", "senet.analysis",
                                                "senet.cli", "matplotlib", "PIL", "yaml", "triton"))]
    assert heavy == []


def _tool():
    spec = importlib.util.spec_from_file_location("senet_import_graph", ROOT / "tools" / "import_graph.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_the_package_has_no_import_cycle():
    tool = _tool()
    graph = tool.graph()
    assert "senet.models.registry" in graph and graph["senet.models.resnet"]  # the reader found the package
    assert tool.cycles(tool.without_package_reexports(graph)) == []


def test_no_cycle_between_packages():
    tool = _tool()
    graph = tool.without_package_reexports(tool.graph())
    packages = tool.package_graph(graph)
    assert {"senet.models", "senet.weights", "senet.published", "senet.factory"} <= set(packages)
    found = tool.cycles(packages)
    detail = {tuple(c): [tool.edges_between(graph, a, b) for a in c for b in c if a != b] for c in found}
    assert found == [], detail
    # The layering the contract needs: the networks never import the weight files, the weight
    # files never import the networks (they take and return the card as data), and the
    # published-weights record both use is a leaf.
    assert "senet.weights" not in packages["senet.models"]
    assert "senet.models" not in packages["senet.weights"]
    assert packages["senet.published"] == set()
    assert {"senet.models", "senet.weights"} <= packages["senet.factory"]


def test_type_checking_imports_count(tmp_path):
    tool = _tool()
    src = tmp_path / "probe.py"
    src.write_text("from typing import TYPE_CHECKING\n"
                   "if TYPE_CHECKING:\n    from senet.models.registry import ModelSpec\n")
    known = set(tool.modules())
    assert tool.imports("senet.probe", src, known) == {"senet.models.registry"}
