"""Rec.601 luma, the one grayscale conversion of the project.

``Y = 0.299 R + 0.587 G + 0.114 B``: the weights of OpenCV's ``COLOR_RGB2GRAY``, which the StackMFF papers, their
network input (SPEC) and the fusion-metric toolboxes use. Fusion, alignment, training and the metrics all call
:func:`luma`; it works on NumPy arrays and torch tensors alike (and never imports torch itself).

Examples:
    >>> import numpy as np
    >>> luma(np.ones((3, 2, 2), np.float32)).shape
    (2, 2)
    >>> float(luma(np.array([1.0, 0.0, 0.0], np.float32), axis=0))
    0.29899999499320984
"""

from __future__ import annotations

__all__ = ["REC601", "luma"]

REC601 = (0.299, 0.587, 0.114)


def luma(x, *, axis: int = -3, keepdims: bool = False):
    """Rec.601 luma of RGB data along the channel ``axis``; single-channel data is returned as it is.

    Args:
        x: NumPy array or torch tensor with 1 or 3 channels on ``axis``, RGB order; e.g. a layer ``(C, H, W)``,
            a stack ``(N, C, H, W)`` or a batch ``(B, N, C, H, W)`` (``axis=-3``), or ``(H, W, 3)`` (``axis=-1``).
        axis: the channel axis.
        keepdims: keep the channel axis (length 1) instead of dropping it.

    Returns:
        The luma, of the input's type, dtype and device (float inputs; the weights are Python floats, so float32
        stays float32), without the channel axis unless ``keepdims``.
    """
    ax = axis % x.ndim
    if x.shape[ax] == 1:
        return x if keepdims else x[(slice(None),) * ax + (0,)]
    if x.shape[ax] != 3:
        raise ValueError(f"luma needs 1 or 3 channels on axis {axis}, got shape {tuple(x.shape)}")
    pick = [x[(slice(None),) * ax + (c,)] for c in range(3)]
    y = REC601[0] * pick[0] + REC601[1] * pick[1] + REC601[2] * pick[2]
    return y[(slice(None),) * ax + (None,)] if keepdims else y
