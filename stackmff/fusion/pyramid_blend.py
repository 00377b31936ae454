"""Laplacian-pyramid blend of a stack's layers steered by per-pixel layer probabilities (:func:`pyramid_blend`).

The default colour rule of StackMFF V3 (``gather="pyramid"``, :mod:`stackmff.fusion.learned`): the network says
which layers may contribute where, the pyramid's salience picks the sharpest coefficients among them. Streamed over
layers and row strips so that it never holds N pyramids or the full-resolution level of the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from .._checks import check_layers
from ..errors import StackMFFError
from ._common import auto_levels, luma_hwc, pyr_down_strips
from .laplacian_pyramid import build_laplacian_pyramid, collapse_laplacian_pyramid

__all__ = ["PyramidBlend", "pyramid_blend"]


def pyramid_blend(
    stack: np.ndarray | Sequence[np.ndarray],
    logits: np.ndarray,
    *,
    alpha: float = 0.5,
    beta: float = 4.0,
    window: int = 5,
    levels: int | None = None,
    strip_rows: int = 256,
    top_k: int | None = None,
    coarse_sharpen: float = 4.0,
) -> np.ndarray:
    """Laplacian-pyramid blend of the layers, steered by the network's per-pixel layer probabilities.

    Every layer is split into a Laplacian pyramid (Burt & Adelson). At each detail level, the weight of layer k is a
    softmax over layers of ``alpha · log G(p_k) + beta · log S_k``: ``G(p_k)`` the network's probability for layer k
    reduced to that level (Gaussian pyramid), ``S_k`` the local energy of the layer's luma coefficients in a
    ``window``² box (Burt & Kolczynski's salience). So the network decides which layers may contribute where (a
    noisy or blurred layer gets p ≈ 0 everywhere and a wrong-depth layer p ≈ 0 in that region), and within the
    layers it allows, the sharpest coefficients win, mixed smoothly across depth edges instead of cut by a per-pixel
    choice. At the coarser detail levels (>= 1) both exponents are multiplied by ``coarse_sharpen`` (4): a sharper
    softmax, so the layer that the network and the salience agree on takes nearly all of the weight there, while the
    finest level keeps the milder rule, where averaging near-equally sharp layers removes their sensor noise and
    grain. The coarsest level is the mean of the layers.

    Memory: an online (streaming) softmax over layers keeps running sums instead of N pyramids, and the finest level
    (3/4 of a pyramid) is never held for the whole image: levels >= 1 are built from each layer's half-resolution
    Gaussian level (computed ``strip_rows`` rows at a time), then level 0 is blended and the image rebuilt strip by
    strip with a margin that makes every strip exact (the result equals the whole-image computation). Besides the
    inputs and the output image: ~1.2 float32 planes of the image (log-sum-exp, half-resolution pyramids) plus
    strips.

    ``alpha``, ``beta`` and ``window`` were chosen on tuning stacks disjoint from every validation set (procedural
    seed 555, Open3D RGB-D frames rendered with seeds 50-53): among alpha 0-1, beta 1-6 and max-selection, window
    3/5, this was the one that beat both the best classical methods on both sets.

    Limit: the probability is a prior, not a veto: with p floored at 1e-6 a layer the network rules out still wins
    where its salience is more than ~5.6× (1e-6 ** (-alpha/beta)) that of the allowed layers. A layer of strong
    noise does that everywhere, which is why :func:`~stackmff.fusion.learned.fuse_stack_v3` drops
    :func:`~stackmff.fusion.outliers.outlier_layers` first; with that rejection off, 4 invalid layers cost 18 dB
    here (tuning stacks) against < 0.1 dB with it. Gating layers out below a fraction of the best probability
    recovered only 28 of those dB and cost 0.3-1.5 dB on clean stacks.

    ``top_k`` (default ``None``: every layer): only each pixel's ``top_k`` most probable layers take part. On long
    hand-held stacks the network is unsure (32-frame phone sweep ``keyboard``: mean top probability 0.24) and the
    prior alone lets many slightly misregistered layers mix: ``top_k=4`` raised its blur check (median block ratio)
    from 0.80 to 0.88. It is not the default: on registered stacks with a known all-in-focus image it loses where
    many layers are valid near a pixel (Middlebury art, N = 24: 42.58 vs 43.53 dB; the default pipeline's N = 16
    procedural stack -0.71 dB), while N = 8-10 stacks move by <= 0.04 dB (weights/README.md).

    Args:
        stack: ``(N, C, H, W)`` in [0, 1] or a sequence of N ``(C, H, W)`` layers.
        logits: ``(N, H, W)`` per-layer logits (any float dtype).
        alpha, beta: exponents of the probability and of the salience.
        window: salience box side (odd).
        levels: detail levels; default until the coarsest level is ~8 px on its short side.
        strip_rows: rows per strip of the full-resolution passes.
        top_k: keep only each pixel's ``top_k`` most probable layers: the others get probability 0 before the
            pyramid reduces it, and a layer whose reduced probability is exactly 0 gets zero weight (not the 1e-6
            floor). ``None``: all layers.
        coarse_sharpen: factor on ``alpha`` and ``beta`` at the detail levels >= 1 (1: the same rule at every
            level). Chosen on the tuning renders (RGB-D scenes, seed 5000; see weights/README.md).

    Returns:
        ``(C, H, W)`` float32 clipped to [0, 1].
    """
    n, _c, h, w = check_layers(stack)
    if logits.shape != (n, h, w):
        raise StackMFFError(f"logits must have shape {(n, h, w)}, got {logits.shape}")
    blend = PyramidBlend(
        stack,
        alpha=alpha,
        beta=beta,
        window=window,
        levels=levels,
        strip_rows=strip_rows,
        top_k=top_k,
        coarse_sharpen=coarse_sharpen,
    )
    step = blend.strip_rows
    for r0 in range(0, h, step):
        blend.add(slice(r0, min(h, r0 + step)), logits[:, r0 : r0 + step])
    return blend.result()


class PyramidBlend:
    """:func:`pyramid_blend` fed with the logits a band of rows at a time, as the network's tiles finish them.

    Every step that reads the logits is local: the log-sum-exp over layers and the ``top_k`` cut are per pixel, the
    half-resolution probability of a row needs 2 full-resolution rows on each side, the finest level's blend 16. So
    each band is consumed as it arrives: the half-resolution probabilities of every layer (float32, N · H · W
    bytes: 1/2 of the fp16 logits) are computed from it, and the finest level's blend of every strip whose margin
    has arrived is written into the output image; only a few rows of logits are kept for the next band's margins.
    :meth:`result` then blends the coarser levels from the kept probabilities and adds their collapse to the finest
    level. The result is bitwise that of :func:`pyramid_blend` on the whole logits array.

    Usage: ``b = PyramidBlend(stack, ...)``, ``b.add(rows, logits_rows)`` for consecutive row slices from 0 to H
    (``logits_rows`` ``(N, r, W)``, any float dtype, the same for every band; ``dtype=np.float16`` rounds them to
    fp16 as they are kept), then ``image = b.result()``.
    """

    margin = 16  # rows of the finest level's strips: pyrDown + pyrUp (+-4 rows) and the salience box

    def __init__(
        self,
        stack: np.ndarray | Sequence[np.ndarray],
        *,
        alpha: float = 0.5,
        beta: float = 4.0,
        window: int = 5,
        levels: int | None = None,
        strip_rows: int = 256,
        top_k: int | None = None,
        coarse_sharpen: float = 4.0,
        dtype: np.dtype | type | None = None,
    ) -> None:
        n, c, h, w = check_layers(stack)
        self.dtype = dtype  # the logits are kept (a few strips of them) in this dtype; None: as they are given
        self.stack, self.shape = stack, (n, c, h, w)
        self.levels = auto_levels(h, w) if levels is None else levels
        self.strip_rows = max(2, int(strip_rows) // 2 * 2)  # even: strips keep the pyramids' 2:1 row phase
        if top_k is not None and int(top_k) < n and int(top_k) < 1:
            raise StackMFFError(f"top_k must be >= 1, got {top_k}")
        self.top_k = int(top_k) if top_k is not None and int(top_k) < n else None
        if not coarse_sharpen > 0:
            raise StackMFFError(f"coarse_sharpen must be > 0, got {coarse_sharpen}")
        self.alpha, self.beta, self.window = alpha, beta, window
        self.coarse_sharpen = float(coarse_sharpen)
        self.image = np.empty((c, h, w), np.float32)  # the finest level's blended detail, then the result
        # the half-resolution probabilities of every layer, filled as the bands arrive
        self.prob1 = [np.empty(((h + 1) // 2, (w + 1) // 2), np.float32) for _ in range(n)]
        self._buf: np.ndarray | None = None  # logits of rows _buf0 : _received
        self._buf0 = self._received = 0
        self._half = 0  # next half-resolution row to compute
        self._strip = 0  # first row of the next finest-level strip

    def _layer_rows(self, k: int, r0: int, r1: int) -> np.ndarray:  # (rows, W, C) float32
        return np.ascontiguousarray(np.asarray(self.stack[k][:, r0:r1], np.float32).transpose(1, 2, 0))

    def _probs(self, r0: int, r1: int):
        # the (rows, W) float32 probability of every layer in turn, rows r0:r1 (kept in the buffer): softmax over the
        # layers, the layers outside a pixel's top_k set to 0; one layer's plane at a time (N of them would be
        # made while the network's band is still held)
        lg = self._buf[:, r0 - self._buf0 : r1 - self._buf0]
        n = lg.shape[0]
        lse = np.max(lg, axis=0).astype(np.float32)
        lsum = np.zeros(lse.shape, np.float32)
        for k in range(n):
            lsum += np.exp(lg[k].astype(np.float32) - lse)
        lse += np.log(lsum)
        del lsum
        kth = None
        if self.top_k is not None:
            kth = np.empty(lse.shape, np.float32)
            kth[:] = np.partition(lg, n - self.top_k, axis=0)[n - self.top_k]
        for k in range(n):
            lk = lg[k].astype(np.float32)
            p = np.exp(lk - lse)
            if kth is not None:
                p[lk < kth] = 0.0
            del lk
            yield p

    def add(self, rows: slice, logits: np.ndarray) -> None:
        """The logits ``(N, r, W)`` of the image rows ``rows`` (the rows right after the previous band's)."""
        n, _c, h, w = self.shape
        if rows.start != self._received or logits.shape != (n, rows.stop - rows.start, w) or rows.stop > h:
            raise StackMFFError(
                f"logits of rows {self._received}.. with shape (N, r, {w}) expected, got {logits.shape}"
            )
        # a strip's rows at a time: the kept rows stay a few strips whatever the band's height (no copy of the band)
        for r0 in range(0, logits.shape[1], self.strip_rows):
            part = logits[:, r0 : r0 + self.strip_rows].astype(self.dtype or logits.dtype)
            self._buf = part if self._buf is None else np.concatenate([self._buf, part], axis=1)
            del part
            self._received = rows.start + min(logits.shape[1], r0 + self.strip_rows)
            self._advance()

    def _advance(self) -> None:
        _n, _c, h, w = self.shape
        got, done = self._received, self._received == h
        # half-resolution probabilities: output row i needs rows 2i-2 .. 2i+2 (cut as in pyr_down_strips)
        h1 = (h + 1) // 2
        o1 = h1 if done else max(self._half, (got - 4) // 2)
        for o0 in range(self._half, o1, max(1, self.strip_rows // 2)):
            o_end = min(o1, o0 + max(1, self.strip_rows // 2))
            a0, a1 = max(0, 2 * o0 - 4), min(h, 2 * o_end + 4)
            for k, p in enumerate(self._probs(a0, a1)):
                self.prob1[k][o0:o_end] = cv2.pyrDown(p, borderType=cv2.BORDER_REFLECT_101)[
                    o0 - a0 // 2 : o_end - a0 // 2
                ]
                del p
        self._half = o1
        # the finest level's blend of every strip whose margin has arrived
        blend = _OnlineSoftmax(self.alpha, self.beta, self.window, self.top_k is not None)
        while self._strip < h:
            y0 = self._strip
            y1 = min(h, y0 + self.strip_rows)
            a0, a1 = max(0, y0 - self.margin), min(h, y1 + self.margin)
            if a1 > got:
                break
            for k, p in enumerate(self._probs(a0, a1)):
                x = self._layer_rows(k, a0, a1)
                band0 = x - cv2.pyrUp(
                    cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101),
                    dstsize=(w, a1 - a0),
                    borderType=cv2.BORDER_REFLECT_101,
                ).reshape(x.shape)
                del x
                blend.add(band0, p)
                del band0, p
            self.image[:, y0:y1] = blend.result()[y0 - a0 : y1 - a0].transpose(2, 0, 1)
            self._strip = y1
        # keep only the rows the next half-resolution rows and strips still need
        keep = min(max(0, 2 * self._half - 4), max(0, self._strip - self.margin), got)
        if keep > self._buf0:
            self._buf = self._buf[:, keep - self._buf0 :].copy()
            self._buf0 = keep

    def result(self) -> np.ndarray:
        """The blended image ``(C, H, W)`` float32 in [0, 1], once every row's logits were added."""
        n, c, h, w = self.shape
        if self._received != h:
            raise StackMFFError(f"logits of rows {self._received}..{h} were not added")
        self._buf = None
        levels, strip_rows, exclude = self.levels, self.strip_rows, self.top_k is not None
        # levels >= 1: the half-resolution Gaussian level of every layer and its probability, then their pyramids
        a, b = self.alpha * self.coarse_sharpen, self.beta * self.coarse_sharpen
        coarse = [_OnlineSoftmax(a, b, self.window, exclude) for _ in range(levels - 1)]
        base = None
        for k in range(n):
            g1 = pyr_down_strips(lambda r0, r1, k=k: self._layer_rows(k, r0, r1), h, strip_rows)
            prob, self.prob1[k] = self.prob1[k], None
            bands = build_laplacian_pyramid(g1[..., 0] if c == 1 else g1, levels - 1)
            del g1
            bands = [b if b.ndim == 3 else b[..., None] for b in bands]
            for lev, acc in enumerate(coarse):
                acc.add(bands[lev], prob)
                bands[lev] = None  # type: ignore[call-overload]
                prob = cv2.pyrDown(prob, borderType=cv2.BORDER_REFLECT_101)
            base = bands[-1] / np.float32(n) if base is None else base + bands[-1] / np.float32(n)
            del bands, prob
        assert base is not None
        fused = [acc.result() for acc in coarse] + [base]
        del coarse
        low = collapse_laplacian_pyramid([f[..., 0] for f in fused] if c == 1 else fused)  # the fused level 1
        low = low[..., None] if low.ndim == 2 else low
        del fused
        # the rebuilt image: the collapse of levels >= 1 brought up to full resolution (2 coarse rows of margin for
        # pyrUp) plus the finest level's blended detail, strip by strip
        image = self.image
        h1 = low.shape[0]
        for y0 in range(0, h, strip_rows):
            y1 = min(h, y0 + strip_rows)
            b0, b1 = max(0, y0 // 2 - 2), min(h1, (y1 + 1) // 2 + 2)
            up_h = 2 * (b1 - b0) - (1 if b1 == h1 and h % 2 else 0)  # the full image's odd last row, if it is here
            up = cv2.pyrUp(low[b0:b1], dstsize=(w, up_h), borderType=cv2.BORDER_REFLECT_101).reshape(up_h, w, c)
            strip = up[y0 - 2 * b0 : y1 - 2 * b0] + image[:, y0:y1].transpose(1, 2, 0)
            np.clip(strip, 0.0, 1.0, out=strip)
            image[:, y0:y1] = strip.transpose(2, 0, 1)
        self.image = None
        return image


class _OnlineSoftmax:
    """Running softmax-weighted sum of detail bands over layers: weight ∝ p^alpha · S^beta (see pyramid_blend)."""

    def __init__(self, alpha: float, beta: float, window: int, exclude: bool = False) -> None:
        self.alpha, self.beta, self.window = np.float32(alpha), np.float32(beta), window
        self.exclude = exclude  # probability exactly 0 -> zero weight (finite, so no inf - inf where all are out)
        self.reset()

    def reset(self) -> None:
        self.max = self.sum = self.acc = None

    def add(self, band: np.ndarray, prob: np.ndarray) -> None:
        """``band`` ``(h, w, C)`` detail coefficients of one layer, ``prob`` ``(h, w)`` its probability there."""
        lum = luma_hwc(band[..., 0] if band.shape[2] == 1 else band)
        score = cv2.boxFilter(np.square(lum), -1, (self.window, self.window), borderType=cv2.BORDER_REFLECT_101)
        score += np.float32(1e-10)
        np.log(score, out=score)
        score *= self.beta
        lp = prob + np.float32(1e-6)
        np.log(lp, out=lp)
        lp *= self.alpha
        if self.exclude:
            lp[prob <= 0] = np.float32(-1e4)
        score += lp
        del lp
        if self.max is None:
            self.max, self.sum, self.acc = score, np.ones_like(score), band.copy()
            return
        new_max = np.maximum(self.max, score)
        old = self.max
        old -= new_max
        np.exp(old, out=old)  # rescales what has been accumulated
        score -= new_max
        np.exp(score, out=score)  # this layer's unnormalised weight
        self.sum *= old
        self.sum += score
        for ch in range(band.shape[2]):
            self.acc[..., ch] *= old
            self.acc[..., ch] += score * band[..., ch]
        self.max = new_max

    def result(self) -> np.ndarray:
        out = self.acc / self.sum[..., None]
        self.reset()
        return out
