"""Which CPU inference path serves a model, measured when the user asks (``senet tune``) and
recorded in a file that later calls read.

A measurement taken inside a normal call would make the served graph depend on the machine's
load at that moment; instead :func:`tune` times every candidate (the native path with and
without Inductor and the SE fold, ONNX Runtime, OpenVINO) in interleaved rounds, medians, and
records the fastest as a :class:`TunedChoice` keyed by model, batch size, input size and thread
count. ``prepare_for_inference(backend="tuned")`` and ``compile="auto"`` read it back
(:func:`read_choice`). The file is JSON (``$SENET_TUNE_FILE``, else
``$SENET_CACHE_DIR/tuned.json``, else ``~/.cache/senet/tuned.json``); see docs/deploy.md.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..atomic import atomic_write_bytes
from ..errors import BadFileError, UserInputError
from ..models.card import card_of

__all__ = ["TunedChoice", "Candidate", "tune_file", "choice_key", "read_choice", "record_choice", "BACKENDS",
           "model_name", "load_average", "measured_choice"]

# What prepare_for_inference can serve with; "tuned" reads the choice recorded here.
BACKENDS = ("native", "onnxruntime", "openvino")


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One way to serve: a backend, and for the native one whether Inductor compiles and whether
    the SE units are folded into their last convolution (``senet.deploy.se_fold``)."""

    backend: str
    compile: bool = False
    se_fold: bool = False

    @property
    def label(self) -> str:
        if self.backend != "native":
            return self.backend
        return "native" + (" compiled" if self.compile else " eager") + (" se_fold" if self.se_fold else "")


@dataclasses.dataclass(frozen=True)
class TunedChoice:
    """The fastest candidate ``senet tune`` measured for one model, batch size, input size and
    thread count, with every candidate's median (ms per batch) and the conditions of the run."""

    model: str
    batch_size: int
    input_size: tuple[int, int, int]
    threads: int
    backend: str
    compile: bool
    se_fold: bool
    timings_ms: Mapping[str, float]
    rounds: int
    load_before: float | None  # the 1-minute load average before and after the measurement
    load_after: float | None
    torch_version: str
    machine: str
    measured_at: str

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.backend, self.compile, self.se_fold)

    def native_compile(self) -> bool | None:
        """Whether the fastest native candidate measured was compiled (None: none was measured);
        what ``compile="auto"`` follows when another backend won."""
        native = {label: ms for label, ms in self.timings_ms.items() if label.startswith("native")}
        if not native:
            return None
        return "compiled" in min(native, key=native.__getitem__)

    def summary(self) -> str:
        c, h, w = self.input_size
        rows = sorted(self.timings_ms.items(), key=lambda kv: kv[1])
        text = "\n".join(f"  {label:<24} {ms:9.2f} ms" for label, ms in rows)
        load = ("" if self.load_before is None else
                f"; load average {self.load_before:.2f} before, {self.load_after:.2f} after")
        return (f"{self.model}, batch {self.batch_size} at {c}x{h}x{w}, {self.threads} threads, {self.rounds} "
                f"interleaved rounds (medians{load}):\n{text}\nfastest: {self.candidate.label}")


def tune_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Where choices are recorded: ``path`` if given, else ``$SENET_TUNE_FILE``, else
    ``$SENET_CACHE_DIR/tuned.json``, else ``~/.cache/senet/tuned.json``."""
    if path is not None:
        return Path(path)
    if os.environ.get("SENET_TUNE_FILE"):
        return Path(os.environ["SENET_TUNE_FILE"]).expanduser()
    cache = os.environ.get("SENET_CACHE_DIR") or Path.home() / ".cache" / "senet"
    return Path(cache).expanduser() / "tuned.json"


def model_name(model: nn.Module) -> str:
    """The name a choice is recorded under: the card's model name with the builder overrides that
    made this network (``se_resnet20[layers=(1, 1, 1)]``: another architecture, another speed), else
    the class name."""
    card = card_of(model)
    if card is None:
        return type(model).__name__
    extra = ", ".join(f"{k}={v!r}" for k, v in sorted(card.overrides.items()))
    return f"{card.name}[{extra}]" if extra else card.name


def choice_key(model: str, batch_size: int, input_size: Sequence[int], threads: int) -> str:
    c, h, w = (int(s) for s in input_size)
    return f"{model} batch={batch_size} size={c}x{h}x{w} threads={threads}"


def _read_all(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadFileError(f"{path} is not a senet tune file (JSON): {e}; remove it or run senet tune again") from None
    if not isinstance(data, dict) or not isinstance(data.get("choices"), dict):
        raise BadFileError(f"{path} is not a senet tune file (no 'choices' table); remove it or run senet tune again")
    return data["choices"]


def read_choice(model: str, batch_size: int, input_size: Sequence[int], threads: int,
                path: str | os.PathLike[str] | None = None) -> TunedChoice | None:
    """The choice recorded for exactly this model, batch size, input size and thread count, or None."""
    entry = _read_all(tune_file(path)).get(choice_key(model, batch_size, input_size, threads))
    if entry is None:
        return None
    try:
        entry = {**entry, "input_size": tuple(entry["input_size"]), "timings_ms": dict(entry["timings_ms"])}
        choice = TunedChoice(**entry)
    except (TypeError, KeyError) as e:
        raise BadFileError(f"{tune_file(path)}: the entry for {model} is not a recorded choice ({e}); "
                           "run senet tune again") from None
    if choice.backend not in BACKENDS:
        raise BadFileError(f"{tune_file(path)}: the entry for {model} names backend {choice.backend!r}; "
                           f"allowed: {', '.join(BACKENDS)}")
    return choice


def record_choice(choice: TunedChoice, path: str | os.PathLike[str] | None = None) -> Path:
    """Add ``choice`` to the tune file (replacing the entry of the same key); returns the file."""
    target = tune_file(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    choices = _read_all(target)
    choices[choice_key(choice.model, choice.batch_size, choice.input_size, choice.threads)] = dataclasses.asdict(choice)
    atomic_write_bytes(target, (json.dumps({"choices": choices}, indent=1, sort_keys=True) + "\n").encode())
    return target


def load_average() -> float | None:
    """The 1-minute load average, None where the system does not say."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def measured_choice(model: nn.Module, batch_size: int, input_size: tuple[int, int, int], threads: int,
                    timings: Mapping[Candidate, float], rounds: int, load_before: float | None,
                    load_after: float | None) -> TunedChoice:
    """The :class:`TunedChoice` for ``timings`` (median ms per candidate): the fastest wins."""
    if not timings:
        raise UserInputError("no candidate to choose from")
    best = min(timings, key=timings.__getitem__)
    return TunedChoice(model_name(model), batch_size, tuple(input_size), threads, best.backend, best.compile,
                       best.se_fold, {c.label: round(ms, 4) for c, ms in timings.items()}, rounds, load_before,
                       load_after, torch.__version__, f"{platform.machine()} {platform.processor()}".strip(),
                       datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
