"""Input validation shared by the library and the CLI.

The checks raise the public exceptions of :mod:`stackmff.errors`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .errors import ShapeError, StackMFFError

__all__ = ["check_choice", "check_layers", "check_shape", "check_stack"]


def check_shape(x: np.ndarray | object, dims: Sequence[str], name: str = "input") -> None:
    """Raise :class:`ShapeError` unless ``x`` has ``len(dims)`` dimensions.

    Args:
        x: array or tensor with a ``shape`` attribute.
        dims: symbolic dimension names, e.g. ``["N", "C", "H", "W"]``; integers fix a size.
        name: argument name used in the message.
    """
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != len(dims):
        raise ShapeError(f"{name} must have shape ({', '.join(map(str, dims))}), got {shape}.")
    for want, got in zip(dims, shape):
        if isinstance(want, int) and want != got:
            raise ShapeError(f"{name} must have shape ({', '.join(map(str, dims))}), got {shape}.")


def check_stack(stack: np.ndarray, name: str = "stack", min_layers: int = 2) -> None:
    """Validate a focal stack ``(N, C, H, W)`` float array in [0, 1] with ``N >= min_layers`` and C in {1, 3}."""
    check_shape(stack, ["N", "C", "H", "W"], name)
    n, c, h, w = stack.shape
    if n < min_layers:
        raise StackMFFError(f"{name} must have at least {min_layers} layers, got {n}; add more focus slices.")
    if c not in (1, 3):
        raise ShapeError(f"{name} must have 1 or 3 channels, got {c}.")
    if h < 2 or w < 2:
        raise ShapeError(f"{name} layers must be at least 2x2 pixels, got {h}x{w}.")
    if not np.issubdtype(stack.dtype, np.floating):
        raise StackMFFError(
            f"{name} must be a float array in [0, 1], got dtype {stack.dtype}; load it with stackmff.io."
        )


def check_layers(stack) -> tuple[int, int, int, int]:
    """``(N, C, H, W)`` of a stack given as an array or as a sequence of ``(C, H, W)`` layers read lazily.

    Only the number of layers and the first layer's shape are looked at (a memmap or lazily decoded layers stay
    unread).

    Raises:
        StackMFFError: fewer than 2 layers, or a first layer that is not ``(C, H, W)`` with C in (1, 3).
    """
    n = len(stack)
    if n < 2:
        raise StackMFFError(f"stack must have at least 2 layers, got {n}; add more focus slices")
    first = np.asarray(stack[0]) if not hasattr(stack[0], "shape") else stack[0]
    if first.ndim != 3 or first.shape[0] not in (1, 3):
        raise StackMFFError(
            f"stack layers must be (C, H, W) with C in (1, 3), got {tuple(first.shape)}; load with stackmff.io"
        )
    return n, *first.shape


def check_choice(value: str, choices: Sequence[str], name: str) -> None:
    """Raise :class:`StackMFFError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise StackMFFError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")
