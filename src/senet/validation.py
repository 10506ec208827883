"""Checks of argument values shared across the package, with messages that name the argument."""

from __future__ import annotations

import difflib
from typing import Sequence

from .errors import UserInputError

__all__ = ["check_choice"]


def check_choice(argument: str, value: object, allowed: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming ``argument`` and the allowed values if ``value`` is not one."""
    if value not in allowed:
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserInputError(
            f"{argument}={value!r} is not supported; allowed values: {', '.join(map(repr, allowed))}.{hint}"
        )
