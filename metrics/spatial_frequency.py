"""Spatial frequency (SF) of the fused image (Eskicioglu & Fisher 1995), on the 0-255 luma scale.

References:
    A. M. Eskicioglu, P. S. Fisher, "Image quality measures and their performance", IEEE Trans. Communications
    43(12), 1995.
"""

from __future__ import annotations

from ._validate import ArrayLike, finish, prepare_fused_gray

__all__ = ["spatial_frequency"]


def spatial_frequency(fused: ArrayLike, *, data_range: float = 1.0):
    """``SF = sqrt(RF^2 + CF^2)``, RF/CF the RMS of horizontal/vertical first differences; higher = more detail.

    Differences are averaged over the pixels where they exist (``H (W - 1)`` and ``(H - 1) W``), as in the VIFB
    toolbox. Values are on the 0-255 scale of the Rec.601 luma, the scale papers report.

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
        >>> spatial_frequency(np.tile([0, 255], (4, 2)).astype(np.uint8), data_range=255)
        255.0
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    rf2 = (f[..., :, 1:] - f[..., :, :-1]).pow(2).flatten(1).mean(1)
    cf2 = (f[..., 1:, :] - f[..., :-1, :]).pow(2).flatten(1).mean(1)
    return finish((rf2 + cf2).sqrt(), p)
