"""Mutual information between the fused image and N sources (MI) and its normalised form (NMI, Hossny et al.).

``MI = sum_i I(F; S_i)`` in bits with 256-bin joint histograms of the 8-bit luma (Qu et al. 2002 for two sources).
``NMI = sum_i 2 I(F; S_i) / (H(F) + H(S_i))`` (Hossny et al. 2008), which removes MI's bias towards fused images
with high entropy; each term lies in [0, 1] and equals 1 when F is S_i. ``reduction="mean"`` divides either by N,
making stacks of different sizes comparable. One 256x256 histogram per source: memory does not grow with N.

References:
    G. Qu, D. Zhang, P. Yan, "Information measure for performance of image fusion", Electronics Letters 38(7), 2002.
    M. Hossny, S. Nahavandi, D. Creighton, "Comments on 'Information measure for performance of image fusion'",
    Electronics Letters 44(18), 2008.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ._validate import ArrayLike, check_option, finish, prepare_fusion, quantize8
from .entropy import _hist_entropy, _levels

__all__ = ["mutual_information", "normalized_mutual_information"]


def _mi_terms(fused, sources, data_range: float, reduction: str, normalized: bool):
    check_option(reduction, ("sum", "mean"), "reduction")
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    qf = quantize8(f)
    out = []
    for b in range(qf.shape[0]):
        fb = _levels(qf[b])
        h_f = _hist_entropy(np.bincount(fb, minlength=256))
        total = 0.0
        for i in range(s.shape[1]):
            sb = _levels(quantize8(s[b, i]))
            h_s = _hist_entropy(np.bincount(sb, minlength=256))
            h_fs = _hist_entropy(np.bincount(fb * 256 + sb, minlength=65536))
            mi = max(h_f + h_s - h_fs, 0.0)
            if normalized:
                mi = 2 * mi / (h_f + h_s) if h_f + h_s > 0 else math.nan
            total += mi
        out.append(total / s.shape[1] if reduction == "mean" else total)
    return finish(torch.tensor(out, dtype=torch.float64), p)


def mutual_information(fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0, reduction: str = "sum"):
    """Mutual information ``sum_i I(F; S_i)`` in bits between fused image and sources; higher is better.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range]; RGB -> Rec.601 luma.
        sources: ``(N, ...)`` / ``(B, N, ...)`` array or a list of N images shaped like ``fused``.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        reduction: ``"sum"`` over sources (the published definition) or ``"mean"``.

    Returns:
        bits: float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shape mismatch, values outside [0, data_range], bad ``reduction``.
    """
    return _mi_terms(fused, sources, data_range, reduction, normalized=False)


def normalized_mutual_information(
    fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0, reduction: str = "sum"
):
    """Normalised MI ``sum_i 2 I(F; S_i) / (H(F) + H(S_i))`` (Hossny et al. 2008); higher is better.

    Arguments, returns and errors as :func:`mutual_information`; a term is NaN when F and S_i are both constant.
    """
    return _mi_terms(fused, sources, data_range, reduction, normalized=True)
