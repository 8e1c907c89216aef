"""hexray's own error types, at the bottom of the import graph so every layer can raise them."""

from __future__ import annotations


class UserError(Exception):
    """An error caused by the user's input: `hexray` prints it as one line, without a traceback."""
