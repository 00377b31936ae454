"""PIQE: closed forms of the pooling formula and the distortions it is designed to detect."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _metric_helpers import blur
from skimage import data

from metrics import piqe


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera()[:256, :256].astype(np.float64) / 255.0


def test_flat_image_has_no_active_block_and_scores_100():
    # no block variance above 0.1 -> PIQE = 100 (0 + 1) / (0 + 1)
    assert piqe(np.full((64, 64), 0.5)) == pytest.approx(100.0)


def test_clean_natural_image_scores_well(camera):
    assert 0 < piqe(camera) < 40


def test_noise_blur_and_blockiness_score_worse(camera):
    clean = piqe(camera)
    noisy = np.clip(camera + np.random.default_rng(0).normal(0, 0.08, camera.shape), 0, 1)
    assert piqe(noisy) > clean + 5
    assert piqe(blur(camera, 3.0)) > clean + 20
    ok, enc = cv2.imencode(".jpg", np.rint(camera * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 5])
    jpeg = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
    assert ok and piqe(jpeg, data_range=255) > clean + 20


def test_sizes_not_multiple_of_16_rgb_and_batch(camera):
    odd = camera[:100, :90]
    assert 0 <= piqe(odd) <= 100
    rgb = np.stack([camera] * 3)
    assert piqe(rgb) == pytest.approx(piqe(camera), abs=1e-9)  # equal channels: luma is the image itself
    out = piqe(np.stack([rgb, np.stack([blur(camera, 3)] * 3)]))
    assert out.shape == (2,) and out[0] == pytest.approx(piqe(camera))
    u8 = np.rint(camera * 255).astype(np.uint8)
    assert piqe(u8, data_range=255) == pytest.approx(piqe(u8 / 255.0), abs=1e-9)


def test_too_small_raises():
    with pytest.raises(ValueError, match="at least 16x16"):
        piqe(np.zeros((8, 32)))
