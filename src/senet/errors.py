"""Whose fault an error is, told by its type.

The library raises :class:`UserError` subclasses for what its caller did wrong (a bad value,
name, type, path or file, or two inputs that disagree), each also subclassing the builtin type a
Python caller expects (``except ValueError`` keeps working). :class:`SenetError` subclasses that
are not a :class:`UserError` say that the program could not finish through no fault of the input
and no bug of its own (a full disk, a diverged run). Anything else raised from inside the library
is a bug, and the command line reports it as one (``senet --debug`` shows the traceback).

Nothing here imports anything: every module may raise these.
"""

from __future__ import annotations

__all__ = [
    "SenetError", "UserError", "UserInputError", "UserTypeError", "UnknownNameError", "UserPathError",
    "MissingPathError", "NotAFileError", "BadFileError", "MismatchError", "MissingExtraError", "WriteError",
]


class SenetError(Exception):
    """An error the program expects and explains in one line (the base of every type here)."""


class UserError(SenetError):
    """The caller's mistake; the message names the value, name, path or file, and what would do."""


class UserInputError(UserError, ValueError):
    """A value, or a combination of values, that is not accepted."""


class UserTypeError(UserError, TypeError):
    """An argument of a type the function does not take."""


class UnknownNameError(UserError, KeyError):
    """A name that is not in a table (a model, a dataset, a label set)."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


class UserPathError(UserError, OSError):
    """A path the caller gave that cannot be used as given."""


class MissingPathError(UserPathError, FileNotFoundError):
    """A file or folder that does not exist."""


class NotAFileError(UserPathError, IsADirectoryError):
    """A folder where a file was expected."""


class BadFileError(UserInputError):
    """A file that exists but does not hold what was asked for (corrupt, truncated, another format)."""


class MismatchError(UserInputError):
    """Two inputs that disagree (data and model classes, image sizes, a resume's configuration)."""


class MissingExtraError(UserError, ImportError):
    """An optional feature asked for whose package is not installed; the message names the extra."""


class WriteError(SenetError, OSError):
    """A file could not be written (disk full, read-only file system, no permission); the message
    names the file that was asked for, and nothing of the attempt is left behind."""
