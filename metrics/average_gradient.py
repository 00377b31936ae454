"""Average gradient (AG) of the fused image, on the 0-255 luma scale."""

from __future__ import annotations

from ._validate import ArrayLike, finish, prepare_fused_gray

__all__ = ["average_gradient"]


def average_gradient(fused: ArrayLike, *, data_range: float = 1.0):
    """``AG = mean over the (H-1)(W-1) grid of sqrt((dx^2 + dy^2) / 2)`` with forward differences; higher = sharper.

    ``dx = F(i, j+1) - F(i, j)``, ``dy = F(i+1, j) - F(i, j)`` on the Rec.601 luma scaled to 0-255 (the usual
    definition in the image-fusion literature, e.g. Cui et al., Optics Communications 341, 2015).

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
        >>> round(average_gradient(np.tile(np.arange(8.0), (8, 1)), data_range=255), 6)  # slope 1 along x
        0.707107
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    dx = f[..., :-1, 1:] - f[..., :-1, :-1]
    dy = f[..., 1:, :-1] - f[..., :-1, :-1]
    return finish(((dx * dx + dy * dy) / 2).sqrt().flatten(1).mean(1), p)
