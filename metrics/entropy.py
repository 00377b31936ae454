"""Shannon entropy of the fused image (EN), in bits, over 256 grey levels."""

from __future__ import annotations

import numpy as np
import torch

from ._validate import ArrayLike, finish, prepare_fused_gray, quantize8

__all__ = ["entropy"]


def _hist_entropy(counts: np.ndarray) -> float:
    """Entropy in bits of a histogram (any shape; summed over all bins)."""
    p = counts[counts > 0].astype(np.float64)
    p /= p.sum()
    return float(-(p * np.log2(p)).sum())


def _levels(q: torch.Tensor) -> np.ndarray:
    """Flattened integer levels as numpy (NumPy's bincount is much faster than torch's on CPU)."""
    return q.flatten().cpu().numpy()


def entropy(fused: ArrayLike, *, data_range: float = 1.0):
    """Entropy ``-sum_k p_k log2 p_k`` of the 8-bit luma histogram; higher means more information.

    The image is converted to Rec.601 luma and rounded to 256 levels; for an 8-bit gray image this equals
    ``skimage.measure.shannon_entropy`` (tested).

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        bits in [0, 8]: float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: input is not an array/tensor.
        ValueError: bad shape or values outside [0, data_range].

    Examples:
        >>> import numpy as np
        >>> entropy(np.array([[0, 255], [0, 255]], np.uint8), data_range=255)
        1.0
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    q = quantize8(f)
    vals = [_hist_entropy(np.bincount(_levels(q[b]), minlength=256)) for b in range(q.shape[0])]
    return finish(torch.tensor(vals, dtype=torch.float64), p)
