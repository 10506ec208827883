"""``senet report DIR...``: aggregate run directories into one Markdown page."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="aggregate runs, comparisons, sweeps and excitation studies into one page",
                       description="Find every training run and report below the given directories and write one "
                                   "Markdown page with a table of all runs, their curves, and the sub-reports.")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="run directories or folders holding them")
    p.add_argument("--out", default=None, metavar="FILE.md",
                   help="output Markdown file; its figures go beside it (default: senet_report.md in the DIRs' "
                        "common folder)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..experiments.aggregate import aggregate_report

    path = aggregate_report(args.dirs, args.out)
    print(f"report: {path}")
    return 0
