"""hexray's own error types, at the bottom of the import graph so every layer can raise them.

The command line prints a `UserError` as one line and exits 2; anything else is a bug and keeps its traceback.
Input errors are also `ValueError`s, so code that catches ValueError around a config or a dataset keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """An error the user can act on (their input, their data, how their run ended): one line, no traceback."""


class InputError(UserError, ValueError):
    """The user's input is wrong: a config value, a command-line option, a path that holds the wrong thing."""


class DataError(InputError):
    """A dataset, a shard, a manifest, a run directory or a checkpoint does not hold what hexray needs."""


class RunFailedError(UserError, RuntimeError):
    """A run stopped for a reason its config can fix (a NaN loss, a collective that timed out): says which."""
