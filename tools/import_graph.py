"""The import graph of the ``senet`` package, read from the source (no import is executed).

Every ``import``/``from ... import`` counts: at module level, inside a function, and under
``if TYPE_CHECKING:``, so that a cycle hidden by a function-local import or living only in the
type annotations shows too. :func:`package_graph` collapses modules to their sub-package
(``senet.models``, ``senet.weights``, ...) to check the layering of docs/../CONTRIBUTING.md.
``python tools/import_graph.py`` prints the cycles (strongly connected components of more than
one node) of both graphs and exits 1 if there are any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in (SRC / "senet").rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``name`` imports (``from pkg import mod`` counts as importing ``pkg.mod``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:  # `import senet.x.y` imports senet.x.y; an attribute resolves to its module
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith("senet"):
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {n: imports(n, p, known) for n, p in mods.items()}


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


# A package's __init__ re-exporting its submodules is not a cycle of design: `senet.models` imports
# `senet.models.registry`, which imports nothing back from the package itself.
def without_package_reexports(g: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if not (m.startswith(t + ".") and t in g)} for m, ts in g.items()}


def package_of(module: str) -> str:
    """``senet.models.zoo.cifar`` -> ``senet.models``; a top-level module is its own node."""
    return ".".join(module.split(".")[:2])


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    """Edges between sub-packages (and top-level modules). The root ``senet`` is left out: its
    ``__init__`` is the lazy facade over everything (PEP 562), not a layer."""
    out: dict[str, set[str]] = {}
    for m, ts in g.items():
        a = package_of(m)
        if a == "senet":
            continue
        out.setdefault(a, set())
        out[a] |= {b for b in map(package_of, ts) if b not in (a, "senet")}
    return out


def edges_between(g: dict[str, set[str]], a: str, b: str) -> list[tuple[str, str]]:
    """The module imports that make the package edge ``a -> b`` (for messages)."""
    return sorted((m, t) for m, ts in g.items() for t in ts if package_of(m) == a and package_of(t) == b)


if __name__ == "__main__":
    g = without_package_reexports(graph())
    found = cycles(g) + cycles(package_graph(g))
    for c in found:
        print(" <-> ".join(c))
    sys.exit(1 if found else 0)
