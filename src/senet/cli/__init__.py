"""The ``senet`` command line: parses arguments and dispatches to library functions.

Each sub-command lives in its own module exposing ``add_parser(subparsers)``, which registers
the command and sets ``func`` to a ``run(args) -> int`` function.

Errors, told apart by type (``senet.errors``): the caller's mistake (a ``UserError``: a wrong
value, name, path or file) ends with one line ``senet CMD: error: ...`` and exit status 2; a
failure that is neither the input's fault nor a bug (a ``SenetError`` such as a full disk or a
diverged run, an OS error, running out of memory) with one line and exit status 1; Ctrl-C with
exit status 130. Anything else is a bug: one line ``internal error: ...`` and exit status 1, the
traceback saved to a file the line names; ``--debug`` (before or after the command) shows it.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import re
import sys
import tempfile
import traceback
import warnings
from typing import Iterator, NoReturn, Sequence

from .common import finish_args, join_input_size_words
from .openmp import bound_openmp_spin
from .broken_pipe import quiet_on_broken_pipe
from ..errors import SenetError, UserError

# Each command module imports its library code inside run(), so that `senet --help` and
# `senet CMD --help` print without importing torch.
COMMANDS = ("models", "summary", "train", "eval", "predict", "compare", "ablate", "excitations", "transfer", "report",
            "benchmark", "export", "quantize", "tune")


class _Parser(argparse.ArgumentParser):
    """argparse's parser, with its errors in one line (the usage block is ``--help``'s job)."""

    def error(self, message: str) -> "NoReturn":
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="senet",
        description="Squeeze-and-Excitation networks (Hu et al., arXiv 1709.01507): models, costs, training, analysis.",
    )
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"senet.cli.{name}").add_parser(sub)
    for command in sub.choices.values():  # `senet eval --debug` as well as `senet --debug eval`
        command.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


DEBUG_HELP = "show the Python traceback of an error instead of a one-line message"


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv``; a command's options may come before, between or after its positional
    arguments (``senet predict se_resnet50 --set k=v img.png``: ``parse_intermixed_args``)."""
    argv = join_input_size_words(sys.argv[1:] if argv is None else argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    # The first word that is not a top-level option names the command.
    at = next((i for i, word in enumerate(argv) if not word.startswith("-")), None)
    if at is None or argv[at] not in sub.choices or any(w != "--debug" for w in argv[:at]):
        return finish_args(parser.parse_args(argv), parser)  # help, a missing or unknown command: argparse's words
    command = sub.choices[argv[at]]
    args = command.parse_intermixed_args(argv[at + 1:])
    args.debug = args.debug or "--debug" in argv[:at]
    args.command = argv[at]
    return finish_args(args, command)


@quiet_on_broken_pipe  # `senet models | head`: no traceback
def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    bound_openmp_spin(getattr(args, "command", ""))  # before the command imports torch
    try:
        with _one_line_warnings(args.command, args.debug):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader went away (`senet models | head`): quiet_on_broken_pipe ends quietly
        raise
    except Exception as e:
        if args.debug:
            raise
        status, line = describe_error(e)
        if line.startswith("internal error"):
            line += _saved_traceback(e)
        print(f"senet {args.command}: {line}", file=sys.stderr)
        return status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"senet {args.command}: interrupted", file=sys.stderr)
        return 130


@contextlib.contextmanager
def _one_line_warnings(command: str, debug: bool) -> Iterator[None]:
    """Warnings shown to the user as one line each (``senet CMD: warning: ...``), without the
    source line Python adds; ``--debug`` keeps Python's form, which says where each came from."""
    if debug:
        yield
        return
    previous = warnings.formatwarning

    def one_line(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 line: str | None = None) -> str:
        text = " ".join(str(message).split()) or category.__name__
        return f"senet {command}: warning: {text}\n"

    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = previous


# ".NAME.tmp-PID" (senet.weights.checkpoint.atomic_write_bytes) or ".STEM.tmp-PID.SUFFIX" (export).
_TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.tmp-\d+(?P<suffix>\.[^./]+)?$")


def asked_path(path: str) -> str:
    """The file a hidden temporary file stands in for (``dir/.x.onnx.tmp-12`` -> ``dir/x.onnx``)."""
    head, _, name = path.rpartition("/")
    m = _TEMP_NAME.match(name)
    if not m:
        return path
    return f"{head}/" * bool(head) + m["stem"] + (m["suffix"] or "")


# OS errors that mean "this place cannot take the write", worded the same for every file.
WRITE_ERRNOS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
                errno.EPERM: "operation not permitted"}


def describe_error(e: BaseException) -> tuple[int, str]:
    """The exit status and the one line ``senet CMD:`` prints for ``e``: 2 for the caller's
    mistake (:class:`senet.errors.UserError`), 1 for everything else, worded as a bug unless
    it is one of the program's expected failures, an OS error or running out of memory."""
    msg = str(e).strip() or type(e).__name__  # (a message that lists items, e.g. weight keys, keeps its lines)
    if isinstance(e, UserError):
        return 2, f"error: {msg}"
    if isinstance(e, SenetError):  # a full disk, a diverged run: say what happened, no --debug hint
        return 1, f"error: {msg}"
    if isinstance(e, OSError) and e.errno is not None:  # the machine's, not the input's or a bug
        reason = WRITE_ERRNOS.get(e.errno, e.strerror or msg)
        if e.filename is None:
            return 1, f"error: {reason}"
        asked = asked_path(str(e.filename))  # an atomic write names its hidden temporary file: name the target
        return 1, f"error: cannot write {asked}: {reason}" if asked != str(e.filename) else f"error: {asked}: {reason}"
    if type(e).__name__ == "OutOfMemoryError":  # torch's; named, so that this needs no torch import
        return 1, f"error: out of memory ({msg.splitlines()[0]}); try a smaller batch_size or eval_batch_size"
    if isinstance(e, (RuntimeError, MemoryError)) and ("can't allocate memory" in msg or isinstance(e, MemoryError)):
        # torch's CPU allocator raises a RuntimeError; Python's own, MemoryError
        asked = re.search(r"tried to allocate (\d+) bytes", msg)
        size = f" ({int(asked[1]) / 2**30:.1f} GiB asked for)" if asked else ""
        return 1, f"error: out of memory{size}; try a smaller input size or batch size"
    first = msg.splitlines()[0] if msg.splitlines() else msg
    return 1, f"internal error: {type(e).__name__}: {first} (run with --debug for the traceback"


def _saved_traceback(e: BaseException) -> str:
    """The end of an internal error's line: where its traceback was saved (or only the hint,
    when even that file cannot be written)."""
    try:
        with tempfile.NamedTemporaryFile("w", prefix="senet-traceback-", suffix=".txt", delete=False) as f:
            f.write("".join(traceback.format_exception(e)))
    except OSError:
        return ")"
    return f"; it is saved in {f.name})"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
