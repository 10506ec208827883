"""``senet compare [MODEL...]``: a baseline and its SE twin over several seeds (the paired comparison study)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserInputError
from .sweeps import add_run_arguments, execute

# senet.experiments.DEFAULT_MODELS, written out so that `senet compare --help` needs no torch (tests/test_cli.py
# checks that they agree).
DEFAULT_MODELS = ("resnet20", "se_resnet20")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare", help="train a baseline and its SE twin on the same data, recipe and seeds",
        description="Paired comparison: each model trains with the same recipe and seeds; reports mean ± std of "
                    "final and best top-1/top-5 error, parameters, multiply-adds, time and images/s, and whether "
                    "the difference exceeds the seed-to-seed spread. Finished runs are kept: rerunning resumes. "
                    "One SE model name is paired with its exact baseline (the same network without SE).")
    p.add_argument("models", nargs="*", default=list(DEFAULT_MODELS), metavar="MODEL",
                   help=f"models, the first is the baseline (default: {' '.join(DEFAULT_MODELS)})")
    p.add_argument("--config", metavar="RECIPE", default="bundled", help="recipe for every run (default: bundled)")
    p.add_argument("--recipe", nargs="+", default=None, metavar="RECIPE",
                   help="two or more recipes: one SE model (default se_resnet20) with and without SE under each, "
                        "same seeds; reports the recipe x SE/plain table and the SE gain per recipe")
    p.add_argument("--out", default=None, help="output directory (default: runs/compare-<models>)")
    add_run_arguments(p)
    p.set_defaults(func=run, seeds=None)


def run(args: argparse.Namespace) -> int:
    from ..experiments import comparison_sweep  # here: `senet --help` must not import torch

    seeds = range(args.seeds) if args.seeds is not None else range(3)
    if args.recipe:
        return _run_recipes(args, list(seeds))
    sweep = comparison_sweep(args.models, recipe=args.config, seeds=list(seeds))
    out = Path(args.out or f"runs/compare-{'-'.join(args.models)}")
    args.seeds = None  # already applied
    return execute(sweep, out, args, baseline=sweep.cells[0].label)


def _run_recipes(args: argparse.Namespace, seeds: list[int]) -> int:
    from ..experiments.compare import recipe_comparison_sweep, write_recipe_comparison

    if len(args.models) > 1 and list(args.models) != list(DEFAULT_MODELS):
        raise UserInputError("with --recipe give one SE model (it is paired with its plain twin), got "
                         f"{' '.join(args.models)}")
    model = args.models[0] if list(args.models) != list(DEFAULT_MODELS) else "se_resnet20"
    sweep = recipe_comparison_sweep(args.recipe, model, seeds=seeds)
    out = Path(args.out or f"runs/compare-{model}-{'-'.join(Path(r).stem for r in args.recipe)}")
    args.seeds = None  # already applied
    code = execute(sweep, out, args, baseline=None)
    print(write_recipe_comparison(out, _records(out, sweep), args.recipe, model))
    return code


def _records(out: Path, sweep) -> dict:
    from ..experiments.sweep import read_record, run_dir

    return {c.label: [r for s in sweep.seeds if (r := read_record(run_dir(out, c, s))) is not None]
            for c in sweep.cells}
