"""Mean absolute error (full-reference)."""

from __future__ import annotations

import torch

from ._validate import ArrayLike, finish, prepare_reference

__all__ = ["mae"]


def mae(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """Mean absolute error on the [0, 1] scale.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` or ``"gray"`` (Rec.601 luma).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, values outside [0, data_range], bad ``color``.

    Examples:
        >>> import numpy as np
        >>> mae(np.zeros((4, 4), np.uint8), np.full((4, 4), 51, np.uint8), data_range=255)
        0.2
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    return finish((px.t.to(torch.float64) - py.t.to(torch.float64)).abs().flatten(1).mean(dim=1), px)
