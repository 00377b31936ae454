"""The exceptions the library raises for problems with the user's input.

Every user-facing problem raises :class:`StackMFFError` (a ``ValueError``) whose message is one line saying what is
wrong and how to fix it; the ``stackmff`` command prints that line to stderr and exits with code 2, without a
traceback. Catch :class:`StackMFFError` to handle all of them.

Examples:
    >>> from stackmff.errors import StackMFFError
    >>> issubclass(StackMFFError, ValueError)
    True
"""

from __future__ import annotations

__all__ = ["PartialFailure", "ShapeError", "StackMFFError"]


class StackMFFError(ValueError):
    """A problem with the user's input or parameters; the message is one line with a fix hint."""


class PartialFailure(StackMFFError):
    """Some items of a batch (scenes of ``fuse-dataset``) failed, the others were done; ``results`` holds one
    summary per item, failed ones with an ``"error"`` key. The message is one line listing the failures."""

    def __init__(self, message: str, results: list[dict]):
        super().__init__(message)
        self.results = results


class ShapeError(StackMFFError):
    """An array does not have the documented shape."""
