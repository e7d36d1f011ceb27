"""unirnn's public error types.

Each is a subclass of a built-in error, so ``except ValueError`` written before these
existed keeps catching what it caught. The CLI prints their message (no traceback) and
exits 2; any other exception is a bug in unirnn and is shown with its traceback.
"""

from __future__ import annotations

__all__ = ["FileFormatError", "InputError", "SpecError", "UnirnnError", "WeightsError"]


class UnirnnError(Exception):
    """Base of the errors unirnn raises for input it cannot accept."""


class SpecError(UnirnnError, ValueError):
    """A spec (or spec JSON, or spec option) that is not valid, or not the one expected."""


class WeightsError(UnirnnError, ValueError):
    """Weights that do not match their spec: a missing, extra or mis-shaped tensor,
    a dtype unirnn cannot hold, or a value that is not a numeric array."""


class FileFormatError(UnirnnError, ValueError):
    """A file that is not what its name or its reader expects: unreadable, truncated,
    tampered with, of another format, or holding tensors that do not make a cell."""


class InputError(UnirnnError, ValueError):
    """Inputs of a call that do not fit the module: the sequence's shape or dtype, initial
    states, lengths or cotangents."""
