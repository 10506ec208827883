"""``senet models | head``: a reader that closes the pipe early is not an error.

Python ignores SIGPIPE, so writing to a closed pipe raises BrokenPipeError, from a ``print``
or from the final flush at exit, and prints a traceback. The CLI entry point is wrapped so
that it stops quietly with status 0 instead.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable


def quiet_on_broken_pipe(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap ``main`` so a closed stdout pipe ends the command silently with status 0."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()  # inside the try: the buffered tail is what usually hits the closed pipe
            return code
        except BrokenPipeError:
            # Point stdout at /dev/null so the interpreter's own flush at exit cannot fail again.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return 0

    return wrapper
