"""Private primitives shared by the classical fusion methods (OpenCV based, float32 throughout)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import cv2
import numpy as np

from .._checks import check_stack
from ..color import luma
from ..errors import StackMFFError


def prepare_stack(stack):
    """Validate a ``(N, C, H, W)`` stack and return it as C-contiguous float32 (no copy when already so).

    A :class:`~stackmff.io.CompactStack` (the decoded 8/16-bit layers ``stackmff fuse`` loads) is returned as it is:
    the methods read it one layer at a time (:func:`layer`), each converted exactly as :func:`~stackmff.io.load_stack`
    converts it, so the result is the same while only one float32 layer exists at a time instead of the whole stack.
    """
    from ..io import CompactStack  # (imported here: io is only needed for the compact case)

    check_stack(stack)
    if isinstance(stack, CompactStack):
        return stack  # decoded integers (or a float TIFF checked for NaN when it was loaded): finite
    out = np.ascontiguousarray(stack, dtype=np.float32)
    if not np.isfinite(out).all():
        raise StackMFFError("stack contains NaN or infinite values; load images with stackmff.io.load_stack.")
    return out


def layer(stack, k: int) -> np.ndarray:
    """Layer ``k`` of a :func:`prepare_stack` result as ``(C, H, W)`` float32 (a view of a float32 array)."""
    return np.asarray(stack[k], dtype=np.float32)


def layer_rows(stack, k: int, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of layer ``k`` of a :func:`prepare_stack` result as ``(C, r1 - r0, W)`` float32."""
    return np.asarray(stack[k][:, r0:r1], dtype=np.float32)


def row_strips(height: int, strip_rows: int, margin: int):
    """Strips of an image for a local computation: yields ``(y0, y1, a0, a1)``, the output rows ``y0:y1`` (at most
    ``strip_rows``) and the rows ``a0:a1`` to compute them from (``margin`` more on each side, cut at the image)."""
    strip_rows = max(1, int(strip_rows))
    for y0 in range(0, height, strip_rows):
        y1 = min(height, y0 + strip_rows)
        yield y0, y1, max(0, y0 - margin), min(height, y1 + margin)


def gaussian_radius(sigma: float) -> int:
    """Half the kernel size ``cv2.GaussianBlur(x, (0, 0), sigma)`` uses on float32 (``cvRound(8 sigma + 1) | 1``)."""
    return (int(np.floor(8 * sigma + 1 + 0.5)) | 1) // 2


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


def running_argmax(scores: Iterable[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Per-pixel argmax over the layers of several score maps, fed one layer at a time.

    Args:
        scores: for layer 0, 1, ..., N-1 in turn, its score maps (one per level, each level's the same shape for
            every layer); a generator keeps only one layer's maps besides the running maxima.

    Returns:
        One int32 map per level: the layer with the largest score (the first one on ties).
    """
    best: list[np.ndarray] = []
    choice: list[np.ndarray] = []
    for k, maps in enumerate(scores):
        for lev, s in enumerate(maps):
            if k == 0:
                best.append(s)
                choice.append(np.zeros(s.shape, np.int32))
            else:
                better = s > best[lev]
                best[lev] = np.where(better, s, best[lev])
                choice[lev][better] = k
    return choice


def gather(stack: np.ndarray, index_map: np.ndarray) -> np.ndarray:
    """Pick, per pixel, the pixel of layer ``index_map[y, x]``: ``(N, C, H, W)``, ``(H, W)`` -> ``(C, H, W)``.

    One layer at a time (a compact stack is converted layer by layer), so the memory is the output, one layer and a
    mask besides the stack."""
    _n, c, h, w = stack.shape
    out = np.zeros((c, h, w), np.float32)
    for k in np.unique(index_map):
        mask = index_map == k
        out[:, mask] = layer(stack, int(k))[:, mask]
    return out


def auto_levels(height: int, width: int, *, coarsest: int = 8, max_levels: int = 10) -> int:
    """Number of decomposition levels so that the coarsest band is about ``coarsest`` pixels on its short side."""
    short = min(height, width)
    return int(max(1, min(max_levels, np.floor(np.log2(max(short, 2) / coarsest)))))


def pyr_down_strips(read_rows, h: int, strip_rows: int) -> np.ndarray:
    """``cv2.pyrDown`` of an ``(h, W, C)`` image read ``read_rows(r0, r1)`` a strip at a time; equals the whole one.

    Output row i needs input rows 2i-2..2i+2: each strip of output rows is computed from its input rows plus 4 rows
    of margin (even, so the 2:1 phase is kept), and the rows a strip border could reach are cut off.
    """
    h_out = (h + 1) // 2
    out = None
    half = max(1, strip_rows // 2)
    for o0 in range(0, h_out, half):
        o1 = min(h_out, o0 + half)
        a0, a1 = max(0, 2 * o0 - 4), min(h, 2 * o1 + 4)
        x = read_rows(a0, a1)
        d = cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101)
        d = d.reshape(d.shape[0], d.shape[1], x.shape[2])
        if out is None:
            out = np.empty((h_out, *d.shape[1:]), d.dtype)
        out[o0:o1] = d[o0 - a0 // 2 : o1 - a0 // 2]
    return out
