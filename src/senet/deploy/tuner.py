"""``senet tune``: measure every way to serve a model on this CPU and record the fastest.

The only place the serving path is chosen by a timing, and only when the user asks for it: each
candidate (:class:`~senet.deploy.tuning.Candidate`) is prepared by
:func:`~senet.deploy.fast.prepare_for_inference`, checked against eager PyTorch there, then all
are timed on the same batch in interleaved rounds (:func:`~senet.deploy.fast.latency_ms`), and the
fastest median is recorded (:func:`~senet.deploy.tuning.record_choice`) for
``prepare_for_inference(backend="tuned")`` and ``compile="auto"`` to read. See docs/deploy.md.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import UserInputError
from .engines import ENGINES, engine_installed
from .fast import inductor_available, latency_ms, prepare_for_inference, served_input_size
from .se_fold import se_foldable_units
from .tuning import Candidate, TunedChoice, load_average, measured_choice, record_choice

__all__ = ["tune", "candidates"]


def candidates(backends: Sequence[str] = ("native", *ENGINES), compile: bool = True,
               se_fold: bool = False) -> list[Candidate]:
    """What :func:`tune` measures for ``backends``: the native path eager and (with ``compile``, when
    Inductor can compile here) compiled, each also with the SE fold when ``se_fold``; each engine
    that is installed (one that is not is left out and named by :func:`tune`'s log)."""
    out = []
    for backend in backends:
        if backend == "native":
            for fold in (False, True) if se_fold else (False,):
                out.append(Candidate("native", se_fold=fold))
                if compile and inductor_available():
                    out.append(Candidate("native", compile=True, se_fold=fold))
        elif backend in ENGINES:
            if engine_installed(backend):
                out.append(Candidate(backend))
        else:
            raise UserInputError(f"backend {backend!r} cannot be tuned; allowed: native, {', '.join(ENGINES)}")
    return out


def tune(model: nn.Module, batch_size: int, *, input_size: Sequence[int] | None = None, threads: int | None = None,
         rounds: int = 10, backends: Sequence[str] = ("native", *ENGINES), compile: bool = True,
         path: str | os.PathLike[str] | None = None, record: bool = True,
         log: Callable[[str], None] = lambda _: None) -> TunedChoice:
    """Time every candidate for ``model`` at ``batch_size`` on random images of ``input_size``
    (default: the card's) with ``threads`` threads (default ``torch.get_num_threads()``; set for
    the native path during the measurement, restored after), ``rounds`` interleaved rounds after a
    warm-up, and record the fastest median in the tune file (``path``; none with ``record=False``)."""
    if not (isinstance(rounds, int) and rounds >= 1):
        raise UserInputError(f"rounds must be a positive integer, got {rounds!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise UserInputError(f"batch_size must be a positive integer, got {batch_size!r}")
    size = tuple(int(s) for s in input_size) if input_size is not None else served_input_size(model, None)
    if len(size) != 3 or min(size) < 1:
        raise UserInputError(f"input_size must be (C, H, W) with positive entries, got {tuple(size)}")
    for backend in backends:
        if backend in ENGINES and not engine_installed(backend):
            log(f"{backend} is not installed (pip install 'senet[{backend}]'): not measured")
    chosen = candidates(backends, compile, se_fold=bool(se_foldable_units(model, bn_folded=False)))
    if not chosen:
        raise UserInputError(f"nothing to measure: none of {', '.join(backends)} is available here")
    before = torch.get_num_threads()
    threads = before if threads is None else threads
    x = torch.randn(batch_size, *size, generator=torch.Generator().manual_seed(0))
    try:
        torch.set_num_threads(threads)
        runners, measured = [], []
        for c in chosen:
            log(f"preparing {c.label}")
            try:
                runners.append(prepare_for_inference(model, batch_size, backend=c.backend, compile=c.compile,
                                                     se_fold=c.se_fold, example=x, threads=threads))
            except UserInputError as e:
                if not c.compile:
                    raise
                log(f"{c.label}: not measured: {e}")  # a network Dynamo cannot compile as one graph
                continue
            measured.append(c)
        chosen = measured
        load_before = load_average()
        times = latency_ms(runners, x, rounds)
        load_after = load_average()
    finally:
        torch.set_num_threads(before)
    choice = measured_choice(model, batch_size, size, threads, dict(zip(chosen, times)), rounds,
                             load_before, load_after)
    if record:
        record_choice(choice, path)
    return choice
