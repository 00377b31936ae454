"""Fusion primitives against straightforward reference implementations, and exact pyramid/wavelet round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _helpers import synthetic_stack, textured_image

from stackmff.fusion._common import gather, guided_filter, majority_filter, running_argmax
from stackmff.fusion.focus_measure import focus_measure
from stackmff.fusion.guided import fuse_guided_filter
from stackmff.fusion.laplacian_pyramid import (
    build_laplacian_pyramid,
    collapse_laplacian_pyramid,
    fuse_laplacian_pyramid,
)
from stackmff.fusion.wavelet import fuse_wavelet


def _window_mean(x: np.ndarray, r: int) -> np.ndarray:
    # reference: explicit mean over every (2r+1)^2 window with mirrored borders (OpenCV's BORDER_REFLECT_101)
    p = np.pad(x.astype(np.float64), r, mode="reflect")
    h, w = x.shape
    return np.mean([p[dy : dy + h, dx : dx + w] for dy in range(2 * r + 1) for dx in range(2 * r + 1)], axis=0)


def test_guided_filter_matches_he_et_al_reference():
    rng = np.random.default_rng(0)
    guide = textured_image(23, 31, 1)[0]
    src = rng.random((23, 31)).astype(np.float32)
    r, eps = 2, 1e-2
    mi, mp = _window_mean(guide, r), _window_mean(src, r)
    a = (_window_mean(guide * src, r) - mi * mp) / (_window_mean(guide * guide, r) - mi * mi + eps)
    b = mp - a * mi
    expected = _window_mean(a, r) * guide + _window_mean(b, r)
    np.testing.assert_allclose(guided_filter(guide, src, r, eps), expected, atol=1e-5)


def test_guided_filter_edge_preserving_limits():
    guide = textured_image(20, 20, 1)[0]
    # tiny eps: the output follows the guide (q ~ I when p = I); huge eps: a plain box mean of p
    np.testing.assert_allclose(guided_filter(guide, guide, 2, 1e-8), guide, atol=1e-3)
    src = np.random.default_rng(1).random((20, 20)).astype(np.float32)
    np.testing.assert_allclose(guided_filter(guide, src, 2, 1e6), _window_mean(_window_mean(src, 2), 2), atol=1e-4)


def test_majority_filter_matches_reference_mode():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, (15, 17))
    size, r = 3, 1
    p = np.pad(labels, r, mode="reflect")
    expected = labels.copy()
    for y in range(15):
        for x in range(17):
            counts = np.bincount(p[y : y + size, x : x + size].ravel(), minlength=4).astype(float)
            counts[labels[y, x]] += 0.5  # own label wins ties
            expected[y, x] = int(np.argmax(counts))
    np.testing.assert_array_equal(majority_filter(labels, size), expected)
    np.testing.assert_array_equal(majority_filter(labels, 1), labels)


def test_majority_filter_removes_isolated_decisions():
    labels = np.zeros((9, 9), np.int64)
    labels[4, 4] = 3
    assert (majority_filter(labels, 3) == 0).all()


def test_gather_picks_per_pixel_layers():
    stack = np.arange(3 * 2 * 2 * 2, dtype=np.float32).reshape(3, 2, 2, 2)
    idx = np.array([[0, 2], [1, 0]])
    out = gather(stack, idx)
    for y in range(2):
        for x in range(2):
            np.testing.assert_array_equal(out[:, y, x], stack[idx[y, x], :, y, x])


def test_focus_measure_prefers_the_sharp_image():
    sharp = textured_image(40, 40, 1)[0]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    for measure in ("laplacian_energy", "sml"):
        assert (focus_measure(sharp, measure=measure) > focus_measure(blurred, measure=measure)).mean() > 0.95
    flat = np.full((10, 10), 0.5, np.float32)
    assert np.abs(focus_measure(flat)).max() < 1e-6


@pytest.mark.parametrize(("h", "w"), [(32, 32), (37, 53)])
def test_laplacian_pyramid_round_trip(h, w):
    img = textured_image(h, w, 3).transpose(1, 2, 0).copy()
    bands = build_laplacian_pyramid(img, 3)
    assert len(bands) == 4 and bands[0].shape == img.shape
    np.testing.assert_allclose(collapse_laplacian_pyramid(bands), img, atol=1e-5)


def test_pyramid_options_and_errors():
    stack, _, _ = synthetic_stack(3, height=32, width=32)
    assert fuse_laplacian_pyramid(stack, base="focus", window=1, consistency=1).image.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="levels must be"):
        fuse_laplacian_pyramid(stack, levels=9)
    with pytest.raises(ValueError, match="base must be one of"):
        fuse_laplacian_pyramid(stack, base="median")


def test_wavelet_options_and_errors():
    stack, _, _ = synthetic_stack(3, height=32, width=32)
    assert fuse_wavelet(stack, wavelet="db2", levels=2).image.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="wavelet must be"):
        fuse_wavelet(stack, wavelet="cmor1.5-1.0")
    with pytest.raises(ValueError, match="levels must be"):
        fuse_wavelet(stack, levels=12)


def test_gff_small_images_shrink_the_radii():
    stack, _, _ = synthetic_stack(2, height=20, width=24)
    result = fuse_guided_filter(stack)
    assert result.image.shape == (3, 20, 24) and result.extras["r1"] < 45


@pytest.mark.parametrize("sigma", [0.003, 0.02, 0.1])
def test_noise_std_recovers_gaussian_noise_on_a_textured_image(sigma):
    from stackmff._layer_stats import noise_std

    rng = np.random.default_rng(4)
    yy, xx = np.mgrid[0:300, 0:400].astype(np.float32)
    img = 0.5 + 0.3 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 0.1 * (xx / 400)  # smooth texture + ramp
    img = np.stack([img, img * 0.9, img * 0.8]) + sigma * rng.standard_normal((3, 300, 400)).astype(np.float32)
    # the luma of 3 identical-noise channels with independent noise: std = sigma * |Rec.601 weights|_2
    expect = sigma * float(np.sqrt(0.299**2 + 0.587**2 + 0.114**2))
    assert noise_std(img) == pytest.approx(expect, rel=0.12)
    assert noise_std(img[:1]) == pytest.approx(sigma, rel=0.12)  # gray layer


def test_noise_std_is_not_fooled_by_an_oriented_texture():
    from stackmff._layer_stats import noise_std

    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    noise = 0.005 * np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    for stripes in (xx + yy, xx, yy, xx - yy):  # a fine grating (period 3 px, contrast 0.2) in four directions
        grating = 0.5 + 0.1 * np.sin(2 * np.pi * stripes / 3.0)
        assert noise_std(grating[None]) < 1e-4  # no noise: nothing, however strong the pixel-scale detail
        assert noise_std((grating + noise)[None]) < 0.015  # 0.005 noise reads as at most ~2x, not as the 0.1 grating


def test_running_argmax_matches_argmax_over_the_stacked_scores_first_on_ties():
    rng = np.random.default_rng(0)
    levels = [rng.integers(0, 4, (5, 6, 7)).astype(np.float32), rng.random((5, 3, 4), dtype=np.float32)]
    choice = running_argmax([lev[k] for lev in levels] for k in range(5))  # one layer's maps at a time
    assert [c.dtype for c in choice] == [np.int32, np.int32]
    for lev, ch in zip(levels, choice):
        np.testing.assert_array_equal(ch, np.argmax(lev, axis=0))  # np.argmax: the first maximum (many ties here)
