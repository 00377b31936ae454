"""Layers that must not be fused: exposure-shifted, blank and much noisier frames (:func:`outlier_layers`).

A check of the stack, not of a method: StackMFF V3 drops these layers before its network
(:func:`stackmff.fusion.learned.fuse_stack_v3`), and the alignment uses the same thresholds for its invalid-frame
check. The measures themselves (:func:`~stackmff._layer_stats.lowpass_deviation`,
:func:`~stackmff._layer_stats.noise_std`) are shared primitives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .._checks import check_layers
from .._layer_stats import lowpass_deviation, noise_std

__all__ = ["noise_outliers", "outlier_layers", "photometric_outliers"]


def photometric_outliers(
    stack: np.ndarray | Sequence[np.ndarray], *, threshold: float = 0.05, ratio: float = 4.0
) -> np.ndarray:
    """Layers whose low-pass luma is far from the stack's per-pixel median: exposure-shifted or blank frames.

    Defocus changes fine detail, not the low-pass image, so valid layers of one scene agree at coarse scale: each
    layer is subsampled to ~64 px on its short side and Gaussian-blurred (sigma 2), and its deviation is the median
    over pixels of its absolute difference to the per-pixel median of all layers. A layer is an outlier when its
    deviation exceeds ``threshold`` and ``ratio`` times the median deviation (so a stack is never emptied, and a
    2-layer stack is never touched). Measured deviations: valid synthetic layers <= 0.009, exposure-shifted layers
    0.04-0.48 (most > 0.1), blank frames > 0.045; real stacks of ``../shared/data`` <= 0.04 (all kept).

    Args:
        stack: ``(N, C, H, W)`` array or sequence of ``(C, H, W)`` layers (only every s-th row/column is read).
        threshold: absolute deviation (luma in [0, 1]) above which a layer may be rejected.
        ratio: ... and the multiple of the median deviation it must exceed.

    Returns:
        ``(N,)`` bool, True for an outlier layer.
    """
    n = check_layers(stack)[0]
    dev = lowpass_deviation(stack)  # (N,)
    out = (dev > threshold) & (dev > ratio * np.median(dev))
    return out if n - out.sum() >= 2 else np.zeros(n, bool)


def noise_outliers(
    stack: np.ndarray | Sequence[np.ndarray], *, threshold: float = 0.033, ratio: float = 2.5
) -> np.ndarray:
    """Layers far noisier than the rest of the stack (a frame shot at a much higher ISO, a corrupted frame).

    A layer is an outlier when its :func:`~stackmff._layer_stats.noise_std` exceeds ``threshold`` and ``ratio``
    times the stack's median, so a uniformly noisy (high-ISO) stack keeps every layer and a 2-layer stack is never
    touched. Measured (luma): every layer of every real stack in ``../shared/data`` <= 0.010; valid synthetic layers
    <= 0.026 (a sharp layer whose fine diagonal grating fills the frame: 0.026; sharp textured layers of a held-out
    procedural stack: 0.025); the "noisy" invalid layers of the synthesis (std 0.06-0.25 per channel, i.e. >= 0.040
    in luma) 0.062-0.144 on the tuning stacks, 3.4-40× their stack's median. The median is no sharper reference: in
    a stack of few layers, sharp textured layers raise it (0.020 in that procedural stack).
    Why not leave it to the network: on low-texture scenes (a rendered room) the shipped V3 picked a layer with
    noise std 0.06 on 93 % of the pixels (-18.9 dB), because there the noise is the only high frequency in the stack;
    and the pyramid gather takes the largest detail coefficients, which in a noisy layer are everywhere.
    Limit: a layer sharp on isotropic pixel-scale texture (sand, film grain) over most of the frame, in a stack whose
    other layers are all smooth, can look like a noisy frame; ``reject_outliers=False`` keeps it.

    Returns:
        ``(N,)`` bool, True for an outlier layer.
    """
    n, _c, _h, _w = check_layers(stack)
    sig = np.array([noise_std(stack[k]) for k in range(n)])
    out = (sig > threshold) & (sig > ratio * np.median(sig))
    return out if n - out.sum() >= 2 else np.zeros(n, bool)


def outlier_layers(stack: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Layers that must not be fused: :func:`photometric_outliers` or :func:`noise_outliers`; ``(N,)`` bool."""
    n = check_layers(stack)[0]
    out = photometric_outliers(stack) | noise_outliers(stack)
    return out if n - out.sum() >= 2 else np.zeros(n, bool)
