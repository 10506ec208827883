"""Arguments several sub-commands share, declared once, spelled the same everywhere.

Nothing here imports torch: ``senet --help`` and every ``senet CMD --help`` print without it.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any, Sequence

import yaml

if TYPE_CHECKING:
    import torch

DEVICE_HELP = "cpu, cuda, cuda:N or mps (default: cuda if available, else cpu)"
INPUT_SIZE_FORMS = "N (3xNxN), CxHxW or C H W"


def add_checkpoint_argument(p: argparse.ArgumentParser) -> None:
    """The checkpoint as the first positional argument (``senet eval RUN``) or ``--checkpoint RUN``;
    either way it ends up in ``args.checkpoint``."""
    what = "a .safetensors checkpoint or a run directory (its best checkpoint)"
    p.add_argument("checkpoint", nargs="?", default=argparse.SUPPRESS, metavar="CHECKPOINT", help=what)
    p.add_argument("--checkpoint", dest="checkpoint_option", default=None, metavar="PATH",
                   help="the same, as an option")
    p.set_defaults(finish=_merge_checkpoint)


def _merge_checkpoint(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    positional, option = getattr(args, "checkpoint", None), args.checkpoint_option
    if positional is not None and option is not None and positional != option:
        parser.error(f"two checkpoints given: {positional} and --checkpoint {option}; give one")
    if positional is None and option is None:
        parser.error("give the checkpoint: a run directory or .safetensors file (positionally or --checkpoint)")
    args.checkpoint = positional if positional is not None else option
    del args.checkpoint_option


def add_device_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help=DEVICE_HELP)


def parse_override(text: str) -> tuple[str, object]:
    """``se_reduction=8`` -> ("se_reduction", 8); values are YAML (``se=null`` is the baseline)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {text!r}")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise argparse.ArgumentTypeError(f"--set {key}: cannot parse {value!r}: {err}") from None
    return key.strip(), parsed


def add_source_argument(p: argparse.ArgumentParser) -> None:
    """The network a command works on: a registered name, a checkpoint or a run directory
    (``senet.deploy.inference.resolve_model`` reads all three)."""
    p.add_argument("source", metavar="NAME_OR_CHECKPOINT",
                   help="a registered model name, a .safetensors checkpoint or a run directory")


def add_overrides_argument(p: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable): ``create_model`` keywords, collected in ``args.overrides``."""
    p.add_argument("--set", dest="overrides", type=parse_override, action="append", default=[], metavar="KEY=VALUE",
                   help=help)


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """``--compile``, ``--eager`` and ``--backend``: how a command that runs a trained network runs it on the CPU
    (``senet.deploy.fast.serving_model``; docs/deploy.md)."""
    p.add_argument("--compile", choices=("off", "auto", "on"), default="off",
                   help="on the CPU, also compile with Inductor: 'on' always, 'auto' by a rule (what senet tune "
                        "recorded, else for registered networks); compiling costs tens of seconds (default off)")
    p.add_argument("--eager", action="store_true",
                   help="run the network as loaded, without folding BatchNorm or channels_last")
    p.add_argument("--backend", choices=("native", "onnxruntime", "openvino", "tuned"), default="native",
                   help="on the CPU, what serves the folded network: native (PyTorch, the default), onnxruntime or "
                        "openvino (optional extras), or tuned (what senet tune recorded fastest)")


def compile_option(text: str) -> str | bool:
    """The ``compile`` argument of ``serving_model`` for a ``--compile`` value."""
    return {"off": False, "on": True}.get(text, text)


def resolve_device(name: str | None) -> "torch.device":
    """``--device`` checked against this machine (``senet.device.resolve_device``), or CUDA when
    available, else the CPU."""
    from ..device import resolve_device as _resolve_device  # here: `senet --help` must not import torch

    return _resolve_device(name)


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``224`` -> (3, 224, 224); ``1x28x28`` (or ``1 28 28``, ``1,28,28``) -> (1, 28, 28)."""
    words = text.lower().replace(",", "x").replace(" ", "x").split("x")
    try:
        parts = [int(p) for p in words if p]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = [3, parts[0], parts[0]]
    if len(parts) != 3 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"input size {text!r} is not {INPUT_SIZE_FORMS} (positive integers)")
    return (parts[0], parts[1], parts[2])


class _InputSize(argparse.Action):
    """``--input-size`` as one word (``224``, ``3x224x224``) or three (``3 224 224``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        words = [values] if isinstance(values, str) else list(values)
        try:
            size = parse_input_size("x".join(words) if len(words) == 3 else " ".join(words))
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, str(e)) from None
        setattr(namespace, self.dest, size)


def add_input_size_argument(p: argparse.ArgumentParser, default_help: str) -> None:
    """``--input-size``: ``N``, ``CxHxW`` or ``C H W`` (see :func:`join_input_size_words`)."""
    p.add_argument("--input-size", nargs="+", action=_InputSize, default=None, metavar="SIZE",
                   help=f"{INPUT_SIZE_FORMS} (default: {default_help})")


def join_input_size_words(argv: Sequence[str]) -> list[str]:
    """``--input-size 3 224 224`` -> ``--input-size=3x224x224`` and ``--input-size 32`` ->
    ``--input-size=32``: one attached word, so that a positional argument after the size stays
    positional (``senet summary --input-size 32 se_resnet20``)."""
    out, i = [], 0
    argv = list(argv)
    while i < len(argv):
        word, nxt = argv[i], argv[i + 1:i + 4]
        if word == "--input-size" and len(nxt) == 3 and all(w.isdigit() for w in nxt):
            out.append(f"--input-size={'x'.join(nxt)}")
            i += 4
        elif word == "--input-size" and len(nxt) >= 2 and nxt[0].isdigit() and nxt[1].isdigit():
            # two numbers: neither form; joined, so the size check names it rather than argparse
            # calling the second an unrecognized argument
            out.append(f"--input-size={nxt[0]}x{nxt[1]}")
            i += 3
        elif word == "--input-size" and nxt and not nxt[0].startswith("-"):
            out.append(f"--input-size={nxt[0]}")
            i += 2
        else:
            out.append(word)
            i += 1
    return out


def output_file(text: str) -> str:
    """An ``--out FILE`` argument: its folder must exist and be writable (a typo must not create
    folders anywhere, and a read-only destination fails before any work, naming FILE)."""
    parent = os.path.dirname(os.path.abspath(text)) or "."
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {parent} is not writable "
                                         "(read-only file system or permissions)")
    return text


def finish_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Any:
    """Run the sub-command's post-parse step (e.g. merging the two checkpoint spellings)."""
    finish = getattr(args, "finish", None)
    if finish is not None:
        finish(args, parser)
        del args.finish
    return args


def busy_cpu_latency_note() -> str | None:
    """A one-line note for latencies measured while other processes keep at least one core busy
    (the 1-minute load average, less this process): they are slower and noisier than on a quiet
    machine. None when the CPU is quiet or the load cannot be read."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if load - 1.0 < 1.0:
        return None
    return (f"the CPU is busy (load average {load:.1f} on {cores} cores): the latencies above are slower and "
            f"noisier than on a quiet machine")

