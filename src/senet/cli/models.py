"""``senet models [PATTERN]``: list the registry."""

from __future__ import annotations

import argparse

from ..errors import UserInputError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list registered models", description="List registered models.")
    p.add_argument("pattern", nargs="?", default=None, help="shell-style wildcard, e.g. 'se_resnet*'")
    p.add_argument("--family", default=None, help="only this family (resnet, cifar, ...)")
    p.add_argument("--names", action="store_true", help="print names only, one per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..models.registry import get_model_spec, list_models  # here: `senet --help` must not import torch

    names = list_models(args.pattern, family=args.family)
    if not names:
        families = sorted({get_model_spec(n).family for n in list_models()})
        wanted = " and ".join(x for x in (
            f"pattern {args.pattern!r}" if args.pattern else "", f"family {args.family!r}" if args.family else "") if x)
        raise UserInputError(f"no registered model matches {wanted}. Families: {', '.join(families)}")
    if args.names:
        print("\n".join(names))
        return 0
    width = max(len(n) for n in names)
    alias_width = max(len(", ".join(get_model_spec(n).aliases)) for n in names)
    for name in names:
        spec = get_model_spec(name)
        se = "SE" if spec.has_se else "  "
        aliases = ", ".join(spec.aliases)  # timm's names, accepted everywhere a name is
        print(f"{name.ljust(width)}  {aliases.ljust(alias_width)}  {se}  {spec.family:<9} {spec.description}")
    return 0
