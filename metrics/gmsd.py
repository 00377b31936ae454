"""GMSD (full-reference) via piq.

References:
    W. Xue, L. Zhang, X. Mou, A. C. Bovik, "Gradient magnitude similarity deviation", IEEE TIP 23(2), 2014.
"""

from __future__ import annotations

import piq

from ._validate import ArrayLike, check_min_size, finish, prepare_pair

__all__ = ["gmsd"]


def gmsd(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0):
    """GMSD score of fused image(s) against a ground truth.

    Gradient magnitude similarity deviation (Xue et al. 2014), via ``piq.gmsd``; lower is better, 0 for identical
    images; computed on luma (piq converts RGB to the Y of YIQ).

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 4x4.
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, images smaller than 4x4, values outside [0, data_range].
    """
    px, py = prepare_pair(fused, reference, ("fused", "reference"), data_range=data_range)
    check_min_size(px, 4, "gmsd")
    return finish(piq.gmsd(px.t, py.t, data_range=1.0, reduction="none"), px)
