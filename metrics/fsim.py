"""FSIM (full-reference) via piq.

References:
    L. Zhang, L. Zhang, X. Mou, D. Zhang, "FSIM: a feature similarity index for image quality assessment", IEEE TIP 20(8), 2011.
"""

from __future__ import annotations

import piq

from ._validate import ArrayLike, check_min_size, finish, prepare_reference

__all__ = ["fsim"]


def fsim(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """FSIM score of fused image(s) against a ground truth.

    Feature similarity index (Zhang et al. 2011), via ``piq.fsim``; 1 for identical images; ``color="rgb"`` gives
    the chromatic FSIMc, ``"gray"`` FSIM on luma.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 8x8.
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` or ``"gray"`` (Rec.601 luma).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, images smaller than 8x8, values outside [0, data_range].
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    check_min_size(px, 8, "fsim")
    return finish(piq.fsim(px.t, py.t, data_range=1.0, reduction="none", chromatic=px.t.shape[1] == 3), px)
