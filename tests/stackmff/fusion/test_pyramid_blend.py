"""The pyramid blend: equal to the direct softmax rule, streamed in strips exactly, top_k, follows the network."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import scene_stack
from scipy.ndimage import uniform_filter

from stackmff.errors import StackMFFError
from stackmff.fusion.pyramid_blend import PyramidBlend, pyramid_blend


def _pyramid_reference(st, logits, alpha=0.5, beta=4.0, window=5, top_k=None, coarse_sharpen=4.0):
    # direct (non-streaming) form of the documented rule: softmax over layers of alpha*log G(p) + beta*log S;
    # top_k (default None = all layers): p = 0 outside each pixel's top_k layers; a layer whose reduced p is exactly 0: no weight
    # levels >= 1: both exponents times coarse_sharpen
    import cv2

    from stackmff.fusion._common import auto_levels
    from stackmff.fusion.laplacian_pyramid import build_laplacian_pyramid, collapse_laplacian_pyramid

    _n, _c, h, w = st.shape
    lev = auto_levels(h, w)
    p = torch.from_numpy(logits.astype(np.float32)).softmax(0).numpy()
    if top_k is not None:
        p[logits.astype(np.float32) < np.sort(logits.astype(np.float32), axis=0)[-top_k]] = 0.0
    pyrs = [build_laplacian_pyramid(np.ascontiguousarray(x.transpose(1, 2, 0)), lev) for x in st]
    fused = []
    g = list(p)
    for li in range(lev):
        bands = np.stack([pyr[li] for pyr in pyrs])  # (N, h, w, C)
        y = (bands * np.float32([0.299, 0.587, 0.114])).sum(-1)
        sal = np.stack([uniform_filter(v * v, window, mode="mirror") for v in y])
        score = alpha * np.log(np.stack(g) + 1e-6) + beta * np.log(sal + 1e-10)
        if li >= 1:
            score *= coarse_sharpen
        if top_k is not None:
            score[np.stack(g) <= 0] = -np.inf
        wgt = torch.from_numpy(score).softmax(0).numpy()
        fused.append((wgt[..., None] * bands).sum(0))
        g = [cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101) for x in g]
    fused.append(np.mean([pyr[lev] for pyr in pyrs], axis=0))
    return np.clip(collapse_laplacian_pyramid(fused), 0, 1).transpose(2, 0, 1)


def test_pyramid_blend_equals_the_direct_softmax_and_ignores_layer_order():
    st = scene_stack(n=5, h=70, w=90, seed=3)
    logits = np.random.default_rng(0).normal(0, 3, (5, 70, 90)).astype(np.float32)
    out = pyramid_blend(st, logits)
    assert out.shape == (3, 70, 90) and out.dtype == np.float32
    np.testing.assert_allclose(out, _pyramid_reference(st, logits), atol=2e-5)
    perm = [3, 0, 4, 2, 1]
    np.testing.assert_allclose(pyramid_blend(st[perm], logits[perm]), out, atol=1e-5)
    gray = pyramid_blend(st[:, :1], logits)
    assert gray.shape == (1, 70, 90)
    np.testing.assert_allclose(gray, _pyramid_reference(st[:, :1].repeat(3, 1), logits)[:1], atol=2e-5)
    with pytest.raises(StackMFFError, match="logits must have shape"):
        pyramid_blend(st, logits[:4])
    for k in (None, 1, 2, 3):  # None: every layer takes part
        top = pyramid_blend(st, logits, top_k=k)
        np.testing.assert_allclose(top, _pyramid_reference(st, logits, top_k=k), atol=2e-5)
        np.testing.assert_allclose(pyramid_blend(st[perm], logits[perm], top_k=k), top, atol=1e-5)
    np.testing.assert_array_equal(pyramid_blend(st, logits, top_k=5), pyramid_blend(st, logits, top_k=None))
    with pytest.raises(StackMFFError, match="top_k must be >= 1"):
        pyramid_blend(st, logits, top_k=0)
    for cs in (1.0, 2.5):  # 1: the same rule at every level
        np.testing.assert_allclose(
            pyramid_blend(st, logits, coarse_sharpen=cs), _pyramid_reference(st, logits, coarse_sharpen=cs), atol=2e-5
        )
    with pytest.raises(StackMFFError, match="coarse_sharpen must be > 0"):
        pyramid_blend(st, logits, coarse_sharpen=0)


def test_pyramid_blend_top_k_gives_a_sharp_layer_the_network_rules_out_zero_weight():
    st = scene_stack(n=6, h=64, w=96, seed=4)
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    grating = np.float32(0.2) * np.sin(2 * np.pi * (xx + yy) / 3.0)  # fine, zero-mean: nothing in the base level
    far = st.copy()
    far[5] = np.clip(st[4] + grating, 0, 1)  # very sharp detail in a layer the network gives p ~ 1e-5 everywhere
    logits = np.random.default_rng(3).normal(0, 1, (6, 64, 96)).astype(np.float32)
    logits[5] = -12.0
    # without top_k its salience outweighs the 1e-6-floored prior (the documented limit): the grating leaks in
    leak = np.abs(pyramid_blend(far, logits, top_k=None) - pyramid_blend(st, logits, top_k=None)).max()
    assert leak > 0.05
    # kept out of the top 3 everywhere: zero weight at every detail level, the result only differs through the
    # coarsest level (the mean of the layers, where the grating is ~0)
    diff = np.abs(pyramid_blend(far, logits, top_k=3) - pyramid_blend(st, logits, top_k=3)).max()
    assert diff < 2e-3


@pytest.mark.parametrize(("h", "w", "c"), [(70, 90, 3), (67, 45, 3), (101, 64, 1), (9, 40, 3)])
def test_pyramid_blend_in_strips_equals_the_whole_image(h, w, c):
    st = scene_stack(n=4, h=h, w=w, seed=2)[:, :c]
    logits = np.random.default_rng(1).normal(0, 2, (4, h, w)).astype(np.float16)
    for k in (None, 2):
        whole = pyramid_blend(st, logits, strip_rows=4096, top_k=k)
        for rows in (2, 6, 32):  # many strips, odd heights, strips shorter than the margins
            np.testing.assert_allclose(pyramid_blend(st, logits, strip_rows=rows, top_k=k), whole, atol=1e-6)


def test_pyramid_blend_follows_a_confident_network_between_equally_sharp_layers():
    a, b = scene_stack(n=1, h=64, w=96, seed=5)[0], scene_stack(n=1, h=64, w=96, seed=6)[0]  # two sharp scenes
    st = np.stack([a, b])
    lg = np.zeros((2, 64, 96), np.float32)
    lg[0, :, :48], lg[1, :, 48:] = 8.0, 8.0  # the network: left half from layer 0, right half from layer 1
    out = pyramid_blend(st, lg)
    # away from the seam each half is rebuilt from its layer (measured 0.04 mean error, from the mean base level)
    # and not from the other one (0.18; the two scenes differ by 0.21)
    err = lambda x, cols: np.abs(out - x)[:, 8:-8, cols].mean()  # noqa: E731
    assert err(a, slice(4, 36)) < 0.3 * err(b, slice(4, 36))
    assert err(b, slice(60, 92)) < 0.3 * err(a, slice(60, 92))


@pytest.mark.parametrize(
    ("h", "w", "c", "bands"), [(70, 90, 3, (5, 33, 70)), (67, 45, 1, (1, 2, 3, 40, 67)), (9, 40, 3, (9,))]
)
def test_pyramid_blend_fed_band_by_band_equals_the_whole_logits(h, w, c, bands):
    # the network's bands (any heights, even 1 row, shorter than every margin) give the bits of the whole array
    st = scene_stack(n=4, h=h, w=w, seed=3)[:, :c]
    logits = np.random.default_rng(2).normal(0, 2, (4, h, w)).astype(np.float16)
    for k in (None, 2):
        whole = pyramid_blend(st, logits, strip_rows=8, top_k=k)
        blend = PyramidBlend(st, strip_rows=8, top_k=k)
        r0 = 0
        for r1 in bands:
            blend.add(slice(r0, r1), logits[:, r0:r1])
            r0 = r1
        np.testing.assert_array_equal(blend.result(), whole)
    blend = PyramidBlend(st)
    with pytest.raises(StackMFFError, match="rows"):
        blend.add(slice(1, 3), logits[:, 1:3])
    with pytest.raises(StackMFFError, match="not added"):
        blend.result()
