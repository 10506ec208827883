"""Shared plumbing of ``senet compare`` and ``senet ablate``: run a sweep, write its report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserInputError
from .common import add_device_argument, resolve_device

if TYPE_CHECKING:
    from ..experiments.sweep import Sweep


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seeds", type=int, default=None, help="use seeds 0..N-1 (default: the sweep's own)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every run, e.g. --set epochs=5 (repeatable)")
    add_device_argument(p)
    p.add_argument("--verbose", action="store_true", help="print every epoch of every run")


def execute(sweep: Sweep, out: Path, args: argparse.Namespace, baseline: str | None,
            cells: list[str] | None = None) -> int:
    from dataclasses import replace

    from ..experiments import run_sweep, train_run, write_sweep_report  # here: `senet --help` must not import torch
    from ..train import Reporter, TerminalReporter

    if args.seeds is not None:
        if args.seeds < 1:
            raise UserInputError(f"--seeds must be >= 1, got {args.seeds}")
        sweep = replace(sweep, seeds=tuple(range(args.seeds)))
    reporter = TerminalReporter(tty=False) if args.verbose else Reporter()
    resolve_device(args.device)  # a bad --device fails now, not in the first cell

    def run_fn(cfg, path):
        record = train_run(cfg, path, device=args.device, reporter=reporter)
        print(f"    final top-1 error {record.final['top1_err']:.2f}%, top-5 {record.final['top5_err']:.2f}% "
              f"({record.train_seconds:.0f} s)", flush=True)
        return record

    records = run_sweep(sweep, out, run_fn, log=lambda s: print(s, flush=True), cells=cells,
                        overrides=args.overrides)
    report = write_sweep_report(sweep, records, out, baseline=baseline)
    print()
    print(report.read_text().split("\n![curves]")[0])
    print(f"report: {report}", file=sys.stderr)
    return 0
