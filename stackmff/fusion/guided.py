"""Guided filtering fusion (GFF), Li, Kang & Hu 2013, generalised from two to N inputs.

Algorithm (section II of the paper), per layer n with luma I_n:

1. Two-scale decomposition: base B_n = I_n * Z (31 x 31 average filter), detail D_n = I_n - B_n (per channel).
2. Saliency S_n = |I_n * L| * g (3 x 3 Laplacian, then an 11 x 11 Gaussian with sigma 5, i.e. r_g = sigma_g = 5).
3. Binary weight maps P_n = 1 where S_n is the maximum over the layers.
4. Weights refined by guided filtering with the layer as guide: W_n^B = G(P_n, I_n; r1=45, eps1=0.3),
   W_n^D = G(P_n, I_n; r2=7, eps2=1e-6), normalised to sum to one at every pixel.
5. F = sum_n W_n^B B_n + sum_n W_n^D D_n.

Deviations, all for N inputs or robustness: the guide is the layer's luma (as in the published MATLAB ``GFF.m``,
which guides by ``rgb2gray``); guided-filter outputs are clipped to [0, 1] before normalisation, because with N > 2 the
small negative lobes of several filtered maps can make the sum of weights approach zero; pixels where all weights
vanish fall back to the plain mean. The result is clipped to [0, 1]. Every step is local, so the image is fused in
row strips with a margin that covers their reach (saliency window + twice the larger guided-filter radius: 96 rows
with the paper's values), and within a strip the layers are streamed in two passes (pass 1: running argmax of the
saliency; pass 2: filter each P_n and accumulate weighted bases/details): the result equals the whole-image
computation (tested) while the working memory is a few ``(rows, W, C)`` accumulators of one strip, whatever H and N
are. The guided filter is the O(1) box-filter form of He et al.

References:
    S. Li, X. Kang and J. Hu, "Image fusion with guided filtering", IEEE Trans. Image Processing 22(7),
    2864-2875, 2013. doi:10.1109/TIP.2013.2244222
    K. He, J. Sun and X. Tang, "Guided image filtering", IEEE TPAMI 35(6), 2013. doi:10.1109/TPAMI.2012.213
"""

from __future__ import annotations

import cv2
import numpy as np

from ._common import guided_filter, layer_rows, luma, prepare_stack, row_strips, to_chw, to_hwc
from .registry import FusionResult, register_method

__all__ = ["fuse_guided_filter", "gff_saliency"]


def gff_saliency(gray: np.ndarray, *, rg: int = 5, sigma_g: float = 5.0) -> np.ndarray:
    """GFF saliency ``|Laplacian(I)| * Gaussian(2 rg + 1, sigma_g)`` of an ``(H, W)`` float32 luma image."""
    lap = cv2.Laplacian(np.asarray(gray, np.float32), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE)
    k = 2 * rg + 1
    return cv2.GaussianBlur(np.abs(lap), (k, k), sigma_g, borderType=cv2.BORDER_REPLICATE)


@register_method("guided_filter", "GFF (Li, Kang & Hu 2013): two-scale weights refined by guided filtering, N inputs")
def fuse_guided_filter(
    stack: np.ndarray,
    *,
    r1: int = 45,
    eps1: float = 0.3,
    r2: int = 7,
    eps2: float = 1e-6,
    average_size: int = 31,
    strip_rows: int = 256,
) -> FusionResult:
    """Fuse a focal stack with guided filtering fusion.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        r1: guided-filter radius for the base-layer weights (paper: 45).
        eps1: guided-filter regularisation for the base-layer weights (paper: 0.3).
        r2: guided-filter radius for the detail-layer weights (paper: 7).
        eps2: guided-filter regularisation for the detail-layer weights (paper: 1e-6).
        average_size: size of the average filter of the two-scale decomposition (paper: 31).
        strip_rows: rows per strip (the result does not depend on it).

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` clipped to [0, 1]; no index map (weights blend layers).

    Raises:
        StackMFFError: bad stack shape or dtype.
    """
    stack = prepare_stack(stack)
    _n, c, h, w = stack.shape
    rg = 5  # saliency: 3x3 Laplacian, then an 11 x 11 Gaussian (r_g = sigma_g = 5)
    # the filter radii must fit in the image; the paper's values are meant for images of a few hundred pixels and up
    r1_eff = int(min(r1, max(1, min(h, w) // 2 - 1)))
    r2_eff = int(min(r2, max(1, min(h, w) // 2 - 1)))

    # every step is local: the saliency reaches 1 + rg rows (Laplacian, Gaussian), the refined weights twice the
    # guided-filter radius (two box filters in a row) beyond the argmax, the average filters half their size; row
    # strips with that margin are exact (the result equals the whole-image computation)
    margin = max(1 + rg + 2 * max(r1_eff, r2_eff), average_size // 2)
    image = np.empty((c, h, w), np.float32)
    for y0, y1, a0, a1 in row_strips(h, strip_rows, margin):
        strip = _fuse_rows(stack, a0, a1, r1_eff, eps1, r2_eff, eps2, average_size, rg)
        image[:, y0:y1] = to_chw(strip[y0 - a0 : y1 - a0])
    return FusionResult(image=image, extras={"r1": r1_eff, "eps1": eps1, "r2": r2_eff, "eps2": eps2})


def _fuse_rows(stack, a0: int, a1: int, r1: int, eps1: float, r2: int, eps2: float, average_size: int, rg: int):
    # GFF of the rows a0:a1 of the stack, as if they were the whole image: (rows, W) or (rows, W, C) in [0, 1]
    n, c, _, w = stack.shape
    h = a1 - a0
    # pass 1: running argmax of the saliency -> P_n = (argmax == n)
    best = np.full((h, w), -np.inf, np.float32)
    argmax = np.zeros((h, w), np.int32)
    for k in range(n):
        sal = gff_saliency(luma(layer_rows(stack, k, a0, a1)), rg=rg)
        better = sal > best
        best = np.where(better, sal, best)
        argmax[better] = k
    del best

    # pass 2: refine each P_n with the guided filter and accumulate the weighted base and detail layers
    acc_base = np.zeros((h, w, c), np.float32) if c > 1 else np.zeros((h, w), np.float32)
    acc_detail = np.zeros_like(acc_base)
    acc_mean = np.zeros_like(acc_base)
    sum_wb = np.zeros((h, w), np.float32)
    sum_wd = np.zeros((h, w), np.float32)
    ks = (average_size, average_size)
    for k in range(n):
        lay = layer_rows(stack, k, a0, a1)
        img, gray = to_hwc(lay), luma(lay)
        p = (argmax == k).astype(np.float32)
        wb = np.clip(guided_filter(gray, p, r1, eps1), 0.0, 1.0)
        wd = np.clip(guided_filter(gray, p, r2, eps2), 0.0, 1.0)
        base = cv2.blur(img, ks, borderType=cv2.BORDER_REPLICATE)
        detail = img - base
        if c > 1:
            acc_base += wb[..., None] * base
            acc_detail += wd[..., None] * detail
        else:
            acc_base += wb * base
            acc_detail += wd * detail
        acc_mean += img
        sum_wb += wb
        sum_wd += wd
    tiny = np.float32(1e-6)
    ok_b, ok_d = sum_wb > tiny, sum_wd > tiny
    if c > 1:
        sum_wb, sum_wd, ok_b, ok_d = sum_wb[..., None], sum_wd[..., None], ok_b[..., None], ok_d[..., None]
    mean = acc_mean / np.float32(n)
    mean_base = cv2.blur(mean, ks, borderType=cv2.BORDER_REPLICATE)
    fused_base = np.where(ok_b, acc_base / np.maximum(sum_wb, tiny), mean_base)
    fused_detail = np.where(ok_d, acc_detail / np.maximum(sum_wd, tiny), mean - mean_base)
    return np.clip(fused_base + fused_detail, 0.0, 1.0)
