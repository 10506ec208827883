"""The ``senet`` command line: parses arguments and dispatches to library functions.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which registers
the command and sets ``func`` to a ``run(args) -> int`` function.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

# Imported lazily so that `senet models` does not pay for the training stack.
COMMANDS = ("models", "summary", "train", "eval", "predict", "compare", "ablate", "excitations", "transfer", "report",
            "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="senet",
        description="Squeeze-and-Excitation networks (Hu et al., arXiv 1709.01507): models, costs, training, analysis.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"senet.cli.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, TypeError, FileNotFoundError) as e:
        # User errors (bad names, options, files) get one clear line, not a traceback.
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"senet {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
