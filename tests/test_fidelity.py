"""The generated fidelity page is current, and its headline rows agree with the paper."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "fidelity.md"


def _load_generator():
    # The page's generator is a repository tool (tools/fidelity.py), not part of the installed package.
    spec = importlib.util.spec_from_file_location("senet_fidelity_tool", ROOT / "tools" / "fidelity.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


fidelity = _load_generator()


@pytest.fixture(scope="module")
def rendered() -> str:
    return fidelity.render()


@pytest.mark.slow
def test_committed_page_is_current(rendered):
    assert PAGE.read_text() == rendered, "regenerate: python tools/fidelity.py > docs/fidelity.md"


@pytest.mark.slow
def test_headline_rows_agree(rendered):
    rows = {line.split(" | ")[1]: line for line in rendered.splitlines() if line.startswith("| Table")}
    assert "✓ params ✓ FLOPs" in rows["SE-ResNet-50"]
    assert "✓ params ✓ FLOPs" in rows["ResNet-50"]
    assert "✓ params ✓ FLOPs" in rows["NoSqueeze"]  # Table 16: 4.27 GFLOPs from per-position FCs


@pytest.mark.slow
def test_table3_rows_agree_under_one_convention(rendered):
    rows = [line for line in rendered.splitlines() if line.startswith("| Table 3")]
    assert len(rows) == 4 and all("params truncated" in r and "✓ params" in r and "✗" not in r for r in rows)
    assert sum("✓ FLOPs" in r for r in rows) == 3 and sum("FLOPs nominal" in r for r in rows) == 1
    shufflenet_t1 = [line for line in rendered.splitlines() if line.startswith("| ShuffleNet T1")]
    assert len(shufflenet_t1) == 5 and all("✓ FLOPs" in r for r in shufflenet_t1)


def test_agreement_uses_paper_decimals():
    assert fidelity._agrees(3.8715, "3.87") and not fidelity._agrees(3.8770, "3.87")
    assert fidelity._agrees(26.349, "26.3") and not fidelity._agrees(26.349, "26.4")
    assert fidelity._agrees(2.48, "2.4", "truncate") and not fidelity._agrees(2.48, "2.5", "truncate")
    assert fidelity._agrees(4.2, "4.2", "truncate") and not fidelity._agrees(4.19999, "4.2", "truncate")
