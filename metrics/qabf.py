"""Q^AB/F, the gradient-based fusion quality of Xydeas & Petrović, generalised to N sources.

For a source S and the fused image F, Sobel gradients give per-pixel edge strength ``g`` and orientation
``alpha = atan(gy / gx)`` (``pi/2`` where ``gx = 0``). The relative strength ``G = min(gS, gF) / max(gS, gF)`` and
orientation agreement ``A = 1 - |alpha_S - alpha_F| / (pi/2)`` pass through sigmoids,
``Q^SF = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))``, and

    Q^{S_1..S_N / F} = sum_i sum_p Q^{S_i F}(p) gS_i(p)^L / sum_i sum_p gS_i(p)^L,

which is the published two-source formula for N = 2. Sources are processed one at a time, so memory is linear in N.

With the standard constants a perfect transfer (F equal to the only source) scores ``Qg(1) Qa(1) = 0.97479``,
not 1: ``Tg`` and ``Ta`` make the sigmoids saturate slightly below 1. Borders use zero padding like the reference
MATLAB code. Where ``gS = gF`` we use ``G = 1`` (the reference code's ``GAF = gF`` there is a typo that only matters
when both are non-zero).

References:
    C. S. Xydeas, V. Petrović, "Objective image fusion performance measure", Electronics Letters 36(4), 2000.
"""

from __future__ import annotations

import math

import torch

from ._validate import ArrayLike, finish, prepare_fusion
from .functional.filters import sobel

__all__ = ["QABF_CONSTANTS", "qabf"]

# Xydeas & Petrović (2000): L, Tg, kg, Dg, Ta, ka, Da
QABF_CONSTANTS = {"L": 1.0, "Tg": 0.9994, "kg": -15.0, "Dg": 0.5, "Ta": 0.9879, "ka": -22.0, "Da": 0.8}


def _strength_orientation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gx, gy = sobel(x)
    # MATLAB's conv2 flips the kernel, so the reference's horizontal response is -gx. The sign matters where
    # gx = 0 (alpha = +pi/2 there, not -pi/2), as does float noise: |gx| below 1e-6 (0-255 scale) counts as 0, or
    # rounding would flip a horizontal edge between +pi/2 and -pi/2.
    gx = torch.where(gx.abs() < 1e-6, torch.zeros_like(gx), -gx)
    g = torch.sqrt(gx * gx + gy * gy)
    safe = torch.where(gx == 0, torch.ones_like(gx), gx)
    a = torch.where(gx == 0, torch.full_like(gx, math.pi / 2), torch.atan(gy / safe))
    return g, a


def _qabf(f: torch.Tensor, s: torch.Tensor, c: dict) -> torch.Tensor:
    """``f (B, 1, H, W)``, ``s (B, N, 1, H, W)`` -> ``(B,)``."""
    g_f, a_f = _strength_orientation(f)
    num = torch.zeros(f.shape[0], dtype=f.dtype, device=f.device)
    den = torch.zeros_like(num)
    for i in range(s.shape[1]):
        g_s, a_s = _strength_orientation(s[:, i])
        hi, lo = torch.maximum(g_s, g_f), torch.minimum(g_s, g_f)
        rel = torch.where(hi > 0, lo / torch.where(hi > 0, hi, torch.ones_like(hi)), torch.ones_like(hi))
        agree = 1 - (a_s - a_f).abs() / (math.pi / 2)
        q = (
            c["Tg"]
            / (1 + torch.exp(c["kg"] * (rel - c["Dg"])))
            * c["Ta"]
            / (1 + torch.exp(c["ka"] * (agree - c["Da"])))
        )
        w = g_s ** c["L"]
        num += (q * w).flatten(1).sum(1)
        den += w.flatten(1).sum(1)
    return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.full_like(den, math.nan))


def qabf(fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0, **constants: float):
    """Edge-information transfer from N sources to the fused image (Xydeas & Petrović 2000); higher is better.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range]; RGB is converted to
            Rec.601 luma.
        sources: ``(N, ...)`` / ``(B, N, ...)`` array with the fused image's shape per source, or a list of N
            images; N >= 1.
        data_range: value of white (the score is scale-invariant; it is used for validation).
        **constants: override any of :data:`QABF_CONSTANTS` (``L, Tg, kg, Dg, Ta, ka, Da``).

    Returns:
        Q in [0, 0.975] (NaN if no source has any edge): float for one numpy image, ``(B,)`` array for a batch,
        tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shape mismatch, values outside [0, data_range], unknown constant.

    Examples:
        >>> import numpy as np
        >>> a = np.tile(np.linspace(0, 1, 16), (16, 1))
        >>> round(qabf(a, [a]), 5)
        0.97479
    """
    unknown = set(constants) - set(QABF_CONSTANTS)
    if unknown:
        raise ValueError(f"constants must be among {', '.join(QABF_CONSTANTS)}, got {', '.join(sorted(unknown))}.")
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    return finish(_qabf(f, s, {**QABF_CONSTANTS, **constants}), p)
