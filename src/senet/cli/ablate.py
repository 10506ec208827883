"""``senet ablate SWEEP``: run one of the paper's ablation tables as a sweep (Tables 10-16)."""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

from ..errors import MissingPathError, UserInputError
from .sweeps import add_run_arguments, execute


def shipped_sweeps() -> list[str]:
    return sorted(p.name[:-5] for p in (resources.files("senet") / "sweeps").iterdir() if p.name.endswith(".yaml"))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate", help="run an ablation sweep (a YAML file or a shipped table name) and tabulate it",
        description="Run every variant of a sweep over its seeds (resumable: finished runs are kept) and write a "
                    "table in the paper's layout: errors from the runs, exact parameters and multiply-adds, the "
                    f"paper's figures beside them. Shipped sweeps: {', '.join(shipped_sweeps())}.")
    p.add_argument("sweep", help="sweep YAML path or shipped name")
    p.add_argument("--out", default=None, help="output directory (default: runs/ablate-<sweep>)")
    p.add_argument("--only", action="append", default=None, metavar="LABEL", help="run only this cell (repeatable)")
    p.add_argument("--baseline", default=None, help="cell the others are compared with (default: the first)")
    add_run_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments import load_sweep  # here: `senet --help` must not import torch

    if not Path(args.sweep).is_file() and args.sweep not in shipped_sweeps():
        raise MissingPathError(f"no sweep file or shipped sweep named {args.sweep!r}; shipped: "
                               f"{', '.join(shipped_sweeps())}")
    sweep = load_sweep(args.sweep)
    out = Path(args.out or f"runs/ablate-{Path(args.sweep).stem}")
    baseline = args.baseline or sweep.cells[0].label
    if baseline not in [c.label for c in sweep.cells]:
        raise UserInputError(f"--baseline {baseline!r} is not a cell; cells are {[c.label for c in sweep.cells]}")
    return execute(sweep, out, args, baseline=baseline, cells=args.only)
