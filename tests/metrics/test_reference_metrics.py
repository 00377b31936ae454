"""Full-reference metrics against scikit-image and closed forms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _metric_helpers import blur
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import metrics
from metrics import fsim, gmsd, mae, ms_ssim, mse, psnr, psnr_gray8, rmse, ssim, ssim_gray8, vif_p

REFERENCE_METRICS = [psnr, ssim, fsim, gmsd, vif_p, mse, mae, rmse, psnr_gray8, ssim_gray8]


def _noisy(img: np.ndarray, sd: float = 0.05, seed: int = 0) -> np.ndarray:
    return np.clip(img + np.random.default_rng(seed).normal(0, sd, img.shape), 0, 1)


def test_psnr_matches_skimage(rgb):
    noisy = _noisy(rgb)
    assert psnr(noisy, rgb) == pytest.approx(peak_signal_noise_ratio(rgb, noisy, data_range=1.0), abs=1e-9)


def test_known_mse_psnr_mae():
    a = np.zeros((3, 8, 8))
    b = np.full((3, 8, 8), 0.1)
    assert mse(a, b) == pytest.approx(0.01)
    assert rmse(a, b) == pytest.approx(0.1)
    assert mae(a, b) == pytest.approx(0.1)
    assert psnr(a, b) == pytest.approx(20.0)


@pytest.mark.parametrize("color", ["rgb", "gray"])
def test_ssim_matches_skimage_gaussian(rgb, color):
    noisy = _noisy(rgb)
    if color == "gray":
        w = np.array([0.299, 0.587, 0.114])[:, None, None]
        ref = structural_similarity(
            (rgb * w).sum(0),
            (noisy * w).sum(0),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    else:
        ref = structural_similarity(
            rgb, noisy, channel_axis=0, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    assert ssim(noisy, rgb, color=color) == pytest.approx(ref, abs=1e-6)


def test_gray8_follow_the_papers_convention(rgb):
    import cv2

    noisy = _noisy(rgb)
    g = [
        cv2.cvtColor(np.rint(x * 255).astype(np.uint8).transpose(1, 2, 0).copy(), cv2.COLOR_RGB2GRAY)
        for x in (rgb, noisy)
    ]
    assert psnr_gray8(noisy, rgb) == pytest.approx(peak_signal_noise_ratio(g[0], g[1], data_range=255), abs=1e-12)
    assert ssim_gray8(noisy, rgb) == pytest.approx(structural_similarity(g[0], g[1], data_range=255), abs=1e-12)


@pytest.mark.parametrize("fn", REFERENCE_METRICS, ids=lambda f: f.__name__)
def test_identical_images(fn, rgb):
    value = fn(rgb, rgb)
    expected = {"psnr": math.inf, "psnr_gray8": math.inf, "mse": 0.0, "mae": 0.0, "rmse": 0.0, "gmsd": 0.0}
    assert value == pytest.approx(expected.get(fn.__name__, 1.0), abs=1e-6)


def test_ms_ssim_identity_and_min_size(rgb):
    big = np.tile(rgb, (1, 2, 2))  # 192 x 224
    assert ms_ssim(big, big) == pytest.approx(1.0, abs=1e-6)
    assert ms_ssim(_noisy(big), big) < 0.99
    with pytest.raises(ValueError, match="at least 161x161"):
        ms_ssim(rgb, rgb)


@pytest.mark.parametrize("fn", [psnr, ssim, fsim, vif_p, ssim_gray8, psnr_gray8], ids=lambda f: f.__name__)
def test_quality_decreases_with_blur(fn, rgb):
    values = [fn(blur(rgb, s), rgb) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values


def test_gmsd_increases_with_blur(rgb):
    values = [gmsd(blur(rgb, s), rgb) for s in (0.5, 1.0, 2.0, 4.0)]
    assert all(a < b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("fn", REFERENCE_METRICS, ids=lambda f: f.__name__)
def test_uint8_with_data_range_255_equals_float(fn, rgb):
    a8 = np.rint(_noisy(rgb) * 255).astype(np.uint8)
    b8 = np.rint(rgb * 255).astype(np.uint8)
    assert fn(a8, b8, data_range=255) == pytest.approx(fn(a8 / 255.0, b8 / 255.0), rel=1e-5, abs=1e-6)


def test_constant_images():
    a, b = np.full((16, 16), 0.25), np.full((16, 16), 0.75)
    assert mse(a, b) == pytest.approx(0.25)
    assert psnr(a, b) == pytest.approx(10 * np.log10(1 / 0.25))
    # SSIM of two constants reduces to the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    c1 = 0.01**2
    assert ssim(a, b) == pytest.approx((2 * 0.25 * 0.75 + c1) / (0.25**2 + 0.75**2 + c1), abs=1e-6)


def test_batched_and_torch_inputs(rgb):
    noisy = _noisy(rgb)
    batch_x, batch_y = np.stack([noisy, rgb]), np.stack([rgb, rgb])
    out = ssim(batch_x, batch_y)
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    assert out[0] == pytest.approx(ssim(noisy, rgb)) and out[1] == pytest.approx(1.0)
    t = psnr(torch.from_numpy(batch_x).float(), torch.from_numpy(batch_y).float())
    assert isinstance(t, torch.Tensor) and t.shape == (2,) and t.dtype == torch.float32
    single = psnr(torch.from_numpy(noisy), torch.from_numpy(rgb))
    assert single.ndim == 0 and single.dtype == torch.float64
    assert float(single) == pytest.approx(psnr(noisy, rgb))


def test_gray_inputs(gray):
    noisy = _noisy(gray)
    assert psnr(noisy, gray) == pytest.approx(peak_signal_noise_ratio(gray, noisy, data_range=1.0))
    assert 0 < ssim(noisy, gray) < 1
    assert 0 < fsim(noisy, gray) < 1


def test_errors(rgb):
    with pytest.raises(ValueError, match="same shape"):
        psnr(rgb, rgb[:, :-1])
    with pytest.raises(ValueError, match="data_range=255"):
        ssim(rgb * 255, rgb * 255)
    with pytest.raises(ValueError, match="color must be one of"):
        psnr(rgb, rgb, color="lab")
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        mse([[0.0]], [[0.0]])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        mse(np.zeros((4, 8, 8)), np.zeros((4, 8, 8)))
    with pytest.raises(ValueError, match="finite"):
        mse(np.full((8, 8), np.nan), np.zeros((8, 8)))
    with pytest.raises(ValueError, match="at least 41x41"):
        vif_p(rgb[:, :32, :32], rgb[:, :32, :32])


def test_package_exports_every_metric():
    assert {f.__name__ for f in REFERENCE_METRICS} <= set(metrics.__all__)
