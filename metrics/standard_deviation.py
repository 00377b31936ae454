"""Standard deviation (SD) of the fused image, a contrast measure, on the 0-255 luma scale."""

from __future__ import annotations

from ._validate import ArrayLike, finish, prepare_fused_gray

__all__ = ["standard_deviation"]


def standard_deviation(fused: ArrayLike, *, data_range: float = 1.0):
    """Population standard deviation of the Rec.601 luma on the 0-255 scale; higher = more contrast.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: input is not an array/tensor.
        ValueError: bad shape or values outside [0, data_range].

    Examples:
        >>> import numpy as np
        >>> standard_deviation(np.array([[0, 255], [0, 255]], np.uint8), data_range=255)
        127.5
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    return finish(f.flatten(1).std(dim=1, correction=0), p)
