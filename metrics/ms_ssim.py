"""MS-SSIM (full-reference) via piq.

References:
    Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for image quality assessment", Asilomar 2003.
"""

from __future__ import annotations

import piq

from ._validate import ArrayLike, check_min_size, finish, prepare_reference

__all__ = ["ms_ssim"]


def ms_ssim(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """MS-SSIM score of fused image(s) against a ground truth.

    Multi-scale structural similarity (Wang, Simoncelli & Bovik 2003), 5 scales with the paper's weights, via
    ``piq.multi_scale_ssim``.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 161x161.
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` or ``"gray"`` (Rec.601 luma).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, images smaller than 161x161, values outside [0, data_range].
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    check_min_size(px, 161, "ms_ssim")
    return finish(piq.multi_scale_ssim(px.t, py.t, data_range=1.0, reduction="none"), px)
