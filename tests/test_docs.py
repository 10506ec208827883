"""The documentation runs as written: README.md, CONTRIBUTING.md and every docs/*.md page. Every
```python block is executed, every `senet` command line is parsed by the real CLI parser (and run,
where it takes seconds).

Every Python block runs alone: in a fresh namespace and a fresh temporary working directory of its
own, given only what it names, so that the rule holds whichever pytest-xdist worker runs it and in
whatever order:

* the weight files it names (``WEIGHT_FILES``) are made from the timm fixtures
  (``tests/fixtures/timm``): the published files have the same keys and shapes, only other numbers;
* a file or folder another block makes is named in the block's ``# needs:`` line as
  ``(uses PATH, ...)``; the block that makes it (the one block that names PATH in quotes and does
  not use it) runs first, once per worker, in a folder of its own, and PATH is copied into the
  using block's folder. A block that uses what a ``minutes`` block makes is a ``minutes`` block too.

New blocks are picked up automatically. A block that cannot run everywhere says so in a comment
line of its own, which readers see too:

    # needs: cuda          skipped unless a CUDA device is present
    # needs: network       skipped (the test machine is offline)
    # needs: minutes       a training run: only with `pytest -m slow`
    # needs: onnxruntime   an optional extra (onnx, onnxruntime, triton, tensorboard, huggingface_hub):
                           skipped where it is not installed

Shell blocks: each `senet ...` command (also after `&&`, or after `torchrun ... -m senet.cli`)
must parse: command, options and their types. `senet models` and `senet summary` lines also run
(seconds); the others train or need files a fresh clone lacks (runs/..., images), so only their
parsing is checked. `pip` and `python -m pytest` lines are not run.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

from conftest import load_timm_fixture

ROOT = Path(__file__).resolve().parents[1]
# Reading order, the order the tests are listed in (what a block uses from another is named: Block.uses).
FIRST = ("README.md", "docs/models.md", "docs/backbones.md", "docs/training.md", "docs/experiments.md")
DOCS = [ROOT / n for n in FIRST if (ROOT / n).is_file()] + sorted(
    p for p in [*ROOT.glob("docs/*.md"), ROOT / "CONTRIBUTING.md"] if p.is_file() and str(p.relative_to(ROOT)) not in FIRST)

# Weight files the docs name -> (timm fixture with the same layout, file format).
WEIGHT_FILES = {
    "se_resnet50-ce0d4300.pth": ("legacy_seresnet50", "torch"),  # Cadene's port of the authors' SE-ResNet-50
    "seresnet50.safetensors": ("seresnet50", "safetensors"),  # timm seresnet50.a1_in1k
    "mobilenetv1_100.safetensors": ("mobilenetv1_100", "safetensors"),  # timm mobilenetv1_100
}
WEIGHT_NAME = re.compile(r"""["']([\w./-]+\.(?:pth|pt|safetensors|bin))["']""")
NEEDS = re.compile(r"^\s*#\s*needs:\s*([^(\n]+)", re.MULTILINE)
USES = re.compile(r"^\s*#\s*needs:[^(\n]*\(uses ([\w./-]+)", re.MULTILINE)
OPTIONAL_PACKAGES = ("onnx", "onnxruntime", "triton", "tensorboard", "huggingface_hub")
KNOWN_NEEDS = ("cuda", "network", "minutes", *OPTIONAL_PACKAGES)
RUN_COMMANDS = ("models", "summary")  # `senet` commands cheap enough to run in the suite


@dataclasses.dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository root
    line: int  # 1-based line of the opening fence
    lang: str
    code: str

    @property
    def needs(self) -> list[str]:
        return [w.strip() for m in NEEDS.findall(self.code) for w in m.split(",") if w.strip()]

    @property
    def uses(self) -> list[str]:
        """Files or folders another block makes (``# needs: ... (uses runs/demo, ...)``)."""
        return USES.findall(self.code)


def blocks(text: str, doc: str = "README.md") -> list[Block]:
    """Fenced code blocks (``` or ~~~) with the first word of their info string."""
    out, fence, start, lang, body = [], None, 0, "", []
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is None:
            m = re.match(r"^(```+|~~~+)\s*([\w+-]*)", stripped)
            if m:
                fence, start, lang, body = m.group(1), i, m.group(2).lower(), []
        elif stripped.startswith(fence) and stripped.strip(fence[0]) == "":
            out.append(Block(doc, start, lang, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    assert fence is None, f"{doc}: the code block opened at line {start} is never closed"
    return out


def _section(text: str, line: int) -> str:
    heads = [(i, h.lstrip("#").strip()) for i, h in enumerate(text.splitlines(), 1) if h.startswith("#") and i < line]
    return heads[-1][1] if heads else "top"


TEXTS = {str(p.relative_to(ROOT)): p.read_text() for p in DOCS}
ALL_BLOCKS = [b for doc, text in TEXTS.items() for b in blocks(text, doc)]
PY_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("python", "py")]
SHELL_BLOCKS = [b for b in ALL_BLOCKS if b.lang in ("bash", "sh", "shell", "console")]


def _marks(block: Block) -> list:
    return [pytest.mark.slow] if "minutes" in block.needs else []


def _id(block: Block) -> str:
    page = Path(block.doc).stem
    return f"{page}-L{block.line}-" + re.sub(r"\W+", "_", _section(TEXTS[block.doc], block.line)).strip("_")[:30]


def maker(path: str) -> Block:
    """The one Python block that makes ``path``: it names it in quotes and does not use it."""
    found = [b for b in PY_BLOCKS if re.search(rf"""["']{re.escape(path)}["']""", b.code) and path not in b.uses]
    assert len(found) == 1, f"{path}: made by {len(found)} blocks ({[f'{b.doc}:{b.line}' for b in found]}), not one"
    return found[0]


def _make_weight_file(path: Path, fixture: str, fmt: str) -> None:
    _, sd, _, _ = load_timm_fixture(fixture)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)


def test_docs_have_python_blocks():
    assert "README.md" in TEXTS and len(DOCS) >= 5
    assert sum(b.doc == "README.md" for b in PY_BLOCKS) >= 1, "the README's Python example was not found"
    assert len(PY_BLOCKS) >= 8, "the docs' Python examples were not found (fence parsing broken?)"
    for block in PY_BLOCKS:
        unknown = [n for n in block.needs if n not in KNOWN_NEEDS]
        assert not unknown, f"{block.doc} line {block.line}: unknown '# needs:' {unknown}; known: {KNOWN_NEEDS}"
        for path in block.uses:
            source = maker(path)
            assert "minutes" in block.needs or "minutes" not in source.needs, (
                f"{block.doc} line {block.line} uses {path}, made by a minutes block ({source.doc}:{source.line})")


def test_the_blocks_that_use_another_blocks_output_are_found():
    users = {b.doc for b in PY_BLOCKS if "runs/demo" in b.uses}
    assert {"docs/deploy.md", "docs/experiments.md"} <= users, users
    assert maker("runs/demo").doc == "docs/training.md"


def _skip_reason(block: Block) -> str | None:
    if "cuda" in block.needs and not torch.cuda.is_available():
        return f"{block.doc} line {block.line}: needs CUDA"
    if "network" in block.needs:
        return f"{block.doc} line {block.line}: needs the network"
    for package in sorted(set(block.needs) & set(OPTIONAL_PACKAGES)):
        try:
            __import__(package)
        except ImportError:
            return f"{block.doc} line {block.line}: needs {package}"
    return None


# What each worker has made for blocks that use another block's output: PATH -> folder holding it.
_MADE: dict[str, Path] = {}


def _made(path: str, tmp_path_factory, monkeypatch) -> Path:
    """A folder holding ``path``, made by :func:`maker` once in this worker (or by its own test)."""
    if path not in _MADE:
        folder = tmp_path_factory.mktemp("made")
        _run_block(maker(path), folder, monkeypatch)
        _MADE[path] = folder
    return _MADE[path] / path


@pytest.mark.parametrize("block", [pytest.param(b, marks=_marks(b), id=_id(b)) for b in PY_BLOCKS])
def test_python_block_runs_as_written(block: Block, tmp_path: Path, tmp_path_factory, monkeypatch):
    reason = _skip_reason(block)
    if reason:
        pytest.skip(reason)
    for path in block.uses:
        made = _made(path, tmp_path_factory, monkeypatch)
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if made.is_dir() else shutil.copy2)(made, tmp_path / path)
    _run_block(block, tmp_path, monkeypatch)
    for path in {p for b in PY_BLOCKS for p in b.uses}:
        if path not in _MADE and maker(path) == block:  # made here: a later user in this worker copies it
            _MADE[path] = tmp_path


def _run_block(block: Block, workdir: Path, monkeypatch) -> None:
    monkeypatch.chdir(workdir)
    # `pretrained=True`: the file a user (or timm) would have in torch.hub's folder, made from the fixture;
    # offline, as the test machine is.
    monkeypatch.setenv("TORCH_HOME", str(workdir / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub_file = workdir / "torch" / "hub" / "checkpoints" / "seresnet50.a1_in1k.safetensors"
    if "pretrained=True" in block.code and not hub_file.exists():
        hub_file.parent.mkdir(parents=True, exist_ok=True)
        _make_weight_file(hub_file, "seresnet50", "safetensors")
    for name in WEIGHT_NAME.findall(block.code):
        if name in WEIGHT_FILES and not (workdir / name).exists():
            _make_weight_file(workdir / name, *WEIGHT_FILES[name])
    code = compile(block.code, f"{block.doc}:{block.line}", "exec")
    try:
        exec(code, {"__name__": "__readme__"})
    except FileNotFoundError as e:
        named = [n for n in WEIGHT_NAME.findall(block.code) if n not in WEIGHT_FILES and n in str(e)]
        hint = f" (add {named} to WEIGHT_FILES in tests/test_docs.py with the fixture of that layout)" if named else ""
        raise AssertionError(f"{block.doc} block at line {block.line}: {e}{hint}") from e


def senet_commands(block: Block) -> list[tuple[int, list[str]]]:
    """``("doc:line", argv after 'senet')`` for every senet invocation in a shell block."""
    found = []
    lines = block.code.splitlines()
    for offset, line in enumerate(lines, 1):
        if offset > 1 and lines[offset - 2].endswith("\\"):
            continue  # part of the command that the previous line started
        while line.endswith("\\") and offset < len(lines):  # a command continued on the next line(s)
            line = line[:-1] + " " + lines[offset]
            offset += 1
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["senet"]:
                found.append((f"{block.doc}:{block.line + offset}", words[1:]))
            elif "senet.cli" in words and words[words.index("senet.cli") - 1] == "-m":
                found.append((f"{block.doc}:{block.line + offset}", words[words.index("senet.cli") + 1:]))
    return found


COMMANDS = [c for b in SHELL_BLOCKS for c in senet_commands(b)]


def test_docs_have_senet_commands():
    commands = {argv[0] for _, argv in COMMANDS if argv}
    assert {"models", "summary", "train", "eval", "compare", "ablate", "report"} <= commands


@pytest.mark.parametrize("line,argv", COMMANDS, ids=[f"{n}-{' '.join(a)[:40]}" for n, a in COMMANDS])
def test_senet_command_line_is_valid(line, argv, capsys):
    from senet.cli import build_parser, main

    try:
        build_parser().parse_args(argv)
    except SystemExit as e:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"{line}: `senet {' '.join(argv)}` does not parse: {err[-1] if err else e}")
    if argv and argv[0] in RUN_COMMANDS:
        assert main(argv) == 0, f"{line}: `senet {' '.join(argv)}` failed: {capsys.readouterr().err}"
        assert capsys.readouterr().out.strip()
