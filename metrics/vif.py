"""VIF-p (full-reference) via piq.

References:
    H. R. Sheikh, A. C. Bovik, "Image information and visual quality", IEEE TIP 15(2), 2006.
"""

from __future__ import annotations

import piq

from ._validate import ArrayLike, check_min_size, finish, prepare_pair

__all__ = ["vif_p"]


def vif_p(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0):
    """VIF-p score of fused image(s) against a ground truth.

    Pixel-domain visual information fidelity (Sheikh & Bovik 2006), via ``piq.vif_p`` (sigma_n^2 = 2 on the 0-255
    scale); 1 for identical images, can exceed 1 for contrast enhancement; computed on luma.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 41x41.
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, images smaller than 41x41, values outside [0, data_range].
    """
    px, py = prepare_pair(fused, reference, ("fused", "reference"), data_range=data_range)
    check_min_size(px, 41, "vif_p")
    return finish(piq.vif_p(px.t, py.t, data_range=1.0, reduction="none"), px)
