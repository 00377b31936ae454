"""Private primitives shared by the classical fusion methods (OpenCV based, float32 throughout)."""

from __future__ import annotations

import cv2
import numpy as np

from .._checks import check_stack
from ..color import luma
from ..errors import StackMFFError


def prepare_stack(stack: np.ndarray) -> np.ndarray:
    """Validate a ``(N, C, H, W)`` stack and return it as C-contiguous float32 (no copy when already so)."""
    check_stack(stack)
    out = np.ascontiguousarray(stack, dtype=np.float32)
    if not np.isfinite(out).all():
        raise StackMFFError("stack contains NaN or infinite values; load images with stackmff.io.load_stack.")
    return out


# second differences along the four pixel directions (horizontal, vertical, two diagonals)
_DIRECTIONS = tuple(
    np.float32(k)
    for k in (
        [[0, 0, 0], [1, -2, 1], [0, 0, 0]],
        [[0, 1, 0], [0, -2, 0], [0, 1, 0]],
        [[1, 0, 0], [0, -2, 0], [0, 0, 1]],
        [[0, 0, 1], [0, -2, 0], [1, 0, 0]],
    )
)
# median over pixels of min_d |second difference_d| for unit white Gaussian noise (measured on 3 × 2048² samples:
# 0.5503, 0.5497, 0.5502)
_DIRECTIONAL_MIN_GAIN = 0.550


def noise_std(layer: np.ndarray, *, max_side: int = 1024) -> float:
    """Robust noise standard deviation of one ``(C, H, W)`` layer's luma.

    At every pixel the smallest absolute second difference over the four pixel directions (0°, 90°, 45°, 135°); the
    median of that over pixels, divided by its value for unit white Gaussian noise. White noise has a second
    difference in every direction; an edge, a line or an oriented texture (fabric, a grating, hair) has none along
    itself, so in-focus detail barely raises the estimate (a Laplacian-type estimator such as Immerkaer's reads a
    frame-filling fine grating as noise of std 0.04; this one 0.026, against >= 0.06 for the synthetic noisy
    layers). Only isotropic pixel-scale texture (sand, film grain) still reads as noise. Large layers are read at a
    stride that keeps the short side near ``max_side`` pixels.
    """
    _c, h, w = np.shape(layer)
    s = max(1, min(h, w) // max_side)
    y = luma(np.asarray(layer[:, ::s, ::s], np.float32))
    low = np.abs(cv2.filter2D(y, cv2.CV_32F, _DIRECTIONS[0]))
    for k in _DIRECTIONS[1:]:
        np.minimum(low, np.abs(cv2.filter2D(y, cv2.CV_32F, k)), out=low)
    return float(np.median(low[1:-1, 1:-1])) / _DIRECTIONAL_MIN_GAIN


def lowpass_deviation(stack) -> np.ndarray:
    """Per layer, how far its low-pass luma is from the stack's per-pixel median: ``(N,)`` float.

    Defocus changes fine detail, not the low-pass image, so valid layers of one scene agree at coarse scale: each
    layer is subsampled to ~64 px on its short side and Gaussian-blurred (sigma 2), and its deviation is the median
    over pixels of its absolute difference to the per-pixel median of all layers. Exposure-shifted, blank and
    unrelated frames deviate. ``stack``: ``(N, C, H, W)`` array or sequence of ``(C, H, W)`` layers (only every s-th
    row/column is read). Shared by V3's outlier rejection and the alignment's invalid-frame check.
    """
    n = len(stack)
    _c, h, w = np.shape(stack[0])
    s = max(1, min(h, w) // 64)
    low = np.stack(
        [cv2.GaussianBlur(luma(np.asarray(stack[k][:, ::s, ::s], np.float32)), (0, 0), 2.0) for k in range(n)]
    )
    return np.median(np.abs(low - np.median(low, axis=0)), axis=(1, 2))


def luma_hwc(x: np.ndarray) -> np.ndarray:
    """Luma ``(H, W)`` of an ``(H, W)`` or ``(H, W, 3)`` array (used on pyramid/wavelet coefficients, which are linear)."""
    return x if x.ndim == 2 else luma(x, axis=-1)


def to_hwc(layer: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` -> ``(H, W)`` for C = 1 or contiguous ``(H, W, 3)`` for C = 3 (OpenCV layout)."""
    return layer[0] if layer.shape[0] == 1 else np.ascontiguousarray(layer.transpose(1, 2, 0))


def to_chw(x: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_hwc`."""
    return x[None] if x.ndim == 2 else np.ascontiguousarray(x.transpose(2, 0, 1))


def box_mean(x: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the ``(2r+1) x (2r+1)`` window (reflected borders), O(1) per pixel."""
    k = 2 * radius + 1
    return cv2.boxFilter(x, cv2.CV_32F, (k, k), normalize=True, borderType=cv2.BORDER_REFLECT_101)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray-guide guided filter (He, Sun & Tang, ECCV 2010 / TPAMI 2013), O(1) per pixel with box filters.

    ``q = mean(a) * I + mean(b)`` with ``a = cov(I, p) / (var(I) + eps)``, ``b = mean(p) - a mean(I)`` over
    ``(2r+1)^2`` windows. Used because ``cv2.ximgproc`` (opencv-contrib) is not a dependency.

    Args:
        guide: ``(H, W)`` float32 guidance image I.
        src: ``(H, W)`` float32 image p to filter.
        radius: window radius r.
        eps: regularisation, in units of the guide's squared intensity.

    Returns:
        ``(H, W)`` float32 filtered image.
    """
    guide = np.asarray(guide, dtype=np.float32)
    src = np.asarray(src, dtype=np.float32)
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (var_i + np.float32(eps))
    b = mean_p - a * mean_i
    return box_mean(a, radius) * guide + box_mean(b, radius)


def majority_filter(labels: np.ndarray, size: int) -> np.ndarray:
    """Replace each label by the most frequent label in its ``size x size`` window (a consistency check).

    Ties are resolved in favour of the pixel's own label, so the filter commutes with relabelling (a permutation of
    the layers permutes the result and changes nothing else) except in ties between two foreign labels.

    Args:
        labels: ``(H, W)`` integer label map.
        size: odd window size; ``size <= 1`` returns the input unchanged.

    Returns:
        ``(H, W)`` label map of the same dtype.
    """
    if size <= 1:
        return labels
    best_count = np.full(labels.shape, -1.0, dtype=np.float32)
    out = labels.copy()
    for lab in np.unique(labels):
        mask = (labels == lab).astype(np.float32)
        count = cv2.boxFilter(mask, cv2.CV_32F, (size, size), normalize=False, borderType=cv2.BORDER_REFLECT_101)
        count += np.float32(0.5) * mask  # own label wins ties
        better = count > best_count
        out[better] = lab
        best_count = np.where(better, count, best_count)
    return out


def gather(stack: np.ndarray, index_map: np.ndarray) -> np.ndarray:
    """Pick, per pixel, the pixel of layer ``index_map[y, x]``: ``(N, C, H, W)``, ``(H, W)`` -> ``(C, H, W)``."""
    idx = np.broadcast_to(index_map[None, None].astype(np.intp), (1, *stack.shape[1:]))
    return np.take_along_axis(stack, idx, axis=0)[0]


def auto_levels(height: int, width: int, *, coarsest: int = 8, max_levels: int = 10) -> int:
    """Number of decomposition levels so that the coarsest band is about ``coarsest`` pixels on its short side."""
    short = min(height, width)
    return int(max(1, min(max_levels, np.floor(np.log2(max(short, 2) / coarsest)))))
