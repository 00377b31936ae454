"""Sum of the correlations of differences (SCD) for two-source fusion (Aslantas & Bendes 2015).

References:
    V. Aslantas, E. Bendes, "A new image quality metric for image fusion: the sum of the correlations of
    differences", AEU International Journal of Electronics and Communications 69(12), 2015.
"""

from __future__ import annotations

import math

import torch

from ._validate import ArrayLike, finish, prepare_fusion

__all__ = ["scd"]


def _corr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of ``(B, ...)`` tensors per batch item (NaN if either is constant)."""
    x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    den = (x.pow(2).sum(1) * y.pow(2).sum(1)).sqrt()
    return torch.where(
        den > 0, (x * y).sum(1) / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, math.nan)
    )


def scd(fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0):
    """``SCD = r(F - B, A) + r(F - A, B)``, r the Pearson correlation; in [-2, 2], higher is better.

    The difference ``F - B`` approximates what F took from A; SCD rewards a fused image whose transfer from each
    source correlates with that source. Defined for pairs only. Computed on Rec.601 luma.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        sources: the two sources, ``(2, ...)`` / ``(B, 2, ...)`` array or a list ``[A, B]``.
        data_range: value of white (the score is scale-invariant; it is used for validation).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input; NaN for constant inputs.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: not exactly two sources, shape mismatch, values outside [0, data_range].
    """
    p, f, s = prepare_fusion(fused, sources, data_range=data_range, n_sources=2)
    a, b = s[:, 0], s[:, 1]
    return finish(_corr(f - b, a) + _corr(f - a, b), p)
