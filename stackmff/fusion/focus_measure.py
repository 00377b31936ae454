"""Focus-measure depth-map fusion: per-layer focus measure, edge-aware regularisation, argmax, gather.

The family of Zerene Stacker "DMap" and Helicon Focus "method B": estimate for every pixel which layer is sharpest
and copy that layer's pixel (exact source values, no blending).

1. Focus measure on luma, per layer: the energy of the Laplacian smoothed by a Gaussian window (default), or the
   sum-modified-Laplacian of Nayar & Nakagawa.
2. Regularisation of the focus volume: each layer's focus measure is filtered by a guided filter whose guide is that
   layer's luma, so evidence spreads along image structures into flat areas but not across edges (the edge-aware
   smoothing of the depth map that Zerene DMap / Helicon B apply with their "radius"/"smoothing" settings).
3. Argmax over layers, then a majority (mode) filter of the index map as a consistency check; gather.

Every step is local, so the image is processed in row strips with a margin that covers the reach of all of them
(focus window, twice the guided-filter radius, half the majority window): the result equals the whole-image
computation (tested) while the working memory is a few planes of one strip, whatever H and N are; within a strip the
layers are read one at a time (running best measure, second best and argmax). Besides the stack: the output image,
the index map and the confidence.

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
from ._common import gaussian_radius, guided_filter, layer_rows, luma, majority_filter, prepare_stack, row_strips
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
    strip_rows: int = 256,
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
        strip_rows: rows per strip (the result does not depend on it).

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` (a gather of source pixels), ``index_map (H, W)`` int64 and
        ``confidence (H, W)`` = 1 - second best / best regularised measure.

    Raises:
        StackMFFError: bad stack shape/dtype or unknown ``measure``.
    """
    stack = prepare_stack(stack)
    check_choice(measure, ("laplacian_energy", "sml"), "measure")
    n, c, h, w = stack.shape
    radius = max(4, round(0.01 * max(h, w))) if smooth_radius is None else int(smooth_radius)
    # every step is local: the focus measure reaches 1 row (Laplacian) + its window, the guided filter 2 radii (two
    # box filters in a row), the majority filter half its window; strips with that margin are exact
    reach = 1 + (gaussian_radius(window) if measure == "laplacian_energy" else round(window))
    margin = reach + 2 * max(radius, 0) + max(consistency, 1) // 2
    index = np.empty((h, w), np.int64)
    conf = np.empty((h, w), np.float32)
    image = np.empty((c, h, w), np.float32)
    for y0, y1, a0, a1 in row_strips(h, strip_rows, margin):
        best = np.full((a1 - a0, w), -np.inf, np.float32)
        second = np.full((a1 - a0, w), -np.inf, np.float32)
        idx = np.zeros((a1 - a0, w), np.int64)
        for k in range(n):  # one layer at a time: running best, second best and argmax
            gray = luma(layer_rows(stack, k, a0, a1))
            fm = focus_measure(gray, measure=measure, window=window)
            if radius > 0:
                fm = guided_filter(gray, fm, radius, smooth_eps)
            better = fm > best
            second = np.where(better, best, np.maximum(second, fm))
            best = np.where(better, fm, best)
            idx[better] = k
        cut = slice(y0 - a0, y1 - a0)
        index[y0:y1] = majority_filter(idx, consistency)[cut]
        best, second = best[cut], second[cut]
        with np.errstate(divide="ignore", invalid="ignore"):
            conf[y0:y1] = np.clip(np.where(best > 0, 1.0 - np.maximum(second, 0) / best, 0.0), 0.0, 1.0)
        del best, second, idx
        sel = index[y0:y1]
        for k in np.unique(sel):
            mask = sel == k
            image[:, y0:y1][:, mask] = layer_rows(stack, int(k), y0, y1)[:, mask]
    return FusionResult(
        image=image,
        index_map=index,
        confidence=conf,
        extras={"measure": measure, "smooth_radius": radius, "consistency": consistency},
    )
