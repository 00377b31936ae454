"""Focus-measure depth-map fusion: per-layer focus measure, edge-aware regularisation, argmax, gather.

The family of Zerene Stacker "DMap" and Helicon Focus "method B": estimate for every pixel which layer is sharpest
and copy that layer's pixel (exact source values, no blending).

1. Focus measure on luma, per layer: the energy of the Laplacian smoothed by a Gaussian window (default), or the
   sum-modified-Laplacian of Nayar & Nakagawa.
2. Regularisation of the focus volume: each layer's focus measure is filtered by a guided filter whose guide is that
   layer's luma, so evidence spreads along image structures into flat areas but not across edges (the edge-aware
   smoothing of the depth map that Zerene DMap / Helicon B apply with their "radius"/"smoothing" settings).
3. Argmax over layers, then a majority (mode) filter of the index map as a consistency check; gather.

Layers are processed one at a time (running best measure, second best and argmax), so memory beyond the input
stack is a few ``(H, W)`` maps whatever N is.

References:
    S. K. Nayar and Y. Nakagawa, "Shape from focus", IEEE TPAMI 16(8), 1994. doi:10.1109/34.308479
    S. Pertuz, D. Puig and M. A. Garcia, "Analysis of focus measure operators for shape-from-focus",
    Pattern Recognition 46(5), 2013. doi:10.1016/j.patcog.2012.11.011
    K. He, J. Sun and X. Tang, "Guided image filtering", IEEE TPAMI 35(6), 2013. doi:10.1109/TPAMI.2012.213
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from .._checks import check_choice
from ._common import gather, guided_filter, layer, luma, majority_filter, prepare_stack
from .registry import FusionResult, register_method

__all__ = ["focus_measure", "fuse_focus_measure"]

_ML_X = np.array([[0, 0, 0], [-1, 2, -1], [0, 0, 0]], np.float32)


def focus_measure(
    gray: np.ndarray, *, measure: Literal["laplacian_energy", "sml"] = "laplacian_energy", window: float = 2.0
) -> np.ndarray:
    """Per-pixel focus measure of one luma image.

    Args:
        gray: ``(H, W)`` float32 luma in [0, 1].
        measure: ``"laplacian_energy"`` (Gaussian-weighted mean of the squared 3x3 Laplacian) or ``"sml"``
            (sum-modified-Laplacian, |d2/dx2| + |d2/dy2| summed over a ``(2 window + 1)^2`` box).
        window: Gaussian sigma (``laplacian_energy``) or box radius (``sml``) of the local window, in pixels.

    Returns:
        ``(H, W)`` float32, larger = sharper.
    """
    check_choice(measure, ("laplacian_energy", "sml"), "measure")
    gray = np.asarray(gray, dtype=np.float32)
    if measure == "laplacian_energy":
        lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT_101)
        return cv2.GaussianBlur(lap * lap, (0, 0), window, borderType=cv2.BORDER_REFLECT_101)
    ml = np.abs(cv2.filter2D(gray, cv2.CV_32F, _ML_X, borderType=cv2.BORDER_REFLECT_101))
    ml += np.abs(cv2.filter2D(gray, cv2.CV_32F, _ML_X.T, borderType=cv2.BORDER_REFLECT_101))
    k = 2 * round(window) + 1
    return cv2.boxFilter(ml, cv2.CV_32F, (k, k), normalize=False, borderType=cv2.BORDER_REFLECT_101)


@register_method(
    "focus_measure", "depth map: Laplacian-energy focus measure, guided-filter regularised, argmax + gather (DMap-like)"
)
def fuse_focus_measure(
    stack: np.ndarray,
    *,
    measure: Literal["laplacian_energy", "sml"] = "laplacian_energy",
    window: float = 2.0,
    smooth_radius: int | None = None,
    smooth_eps: float = 1e-3,
    consistency: int = 5,
) -> FusionResult:
    """Fuse a focal stack by picking, per pixel, the layer with the highest regularised focus measure.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        measure: focus operator, see :func:`focus_measure`.
        window: focus-measure window (sigma or radius) in pixels.
        smooth_radius: guided-filter radius for the focus volume; ``None`` = 1 % of the long image side (at least
            4 px); 0 disables the regularisation.
        smooth_eps: guided-filter regularisation (squared luma units); smaller keeps edges sharper.
        consistency: window of the majority filter of the index map (odd; <= 1 disables it).

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` (a gather of source pixels), ``index_map (H, W)`` int64 and
        ``confidence (H, W)`` = 1 - second best / best regularised measure.

    Raises:
        StackMFFError: bad stack shape/dtype or unknown ``measure``.
    """
    stack = prepare_stack(stack)
    check_choice(measure, ("laplacian_energy", "sml"), "measure")
    n, _, h, w = stack.shape
    radius = max(4, round(0.01 * max(h, w))) if smooth_radius is None else int(smooth_radius)
    best = np.full((h, w), -np.inf, np.float32)
    second = np.full((h, w), -np.inf, np.float32)
    index = np.zeros((h, w), np.int64)
    for k in range(n):  # one layer at a time: memory stays O(H W) beyond the input
        gray = luma(layer(stack, k))
        fm = focus_measure(gray, measure=measure, window=window)
        if radius > 0:
            fm = guided_filter(gray, fm, radius, smooth_eps)
        better = fm > best
        second = np.where(better, best, np.maximum(second, fm))
        best = np.where(better, fm, best)
        index[better] = k
    index = majority_filter(index, consistency)
    with np.errstate(divide="ignore", invalid="ignore"):
        conf = np.where(best > 0, 1.0 - np.maximum(second, 0) / best, 0.0)
    return FusionResult(
        image=gather(stack, index),
        index_map=index,
        confidence=np.clip(conf, 0.0, 1.0).astype(np.float32),
        extras={"measure": measure, "smooth_radius": radius, "consistency": consistency},
    )
