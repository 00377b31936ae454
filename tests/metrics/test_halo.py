"""Halo measures on synthetic halos: ringing scores worse than clean, gathered pixels score 0."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from _metric_helpers import blur, two_focus

from metrics import halo, overshoot


def _ringing(img: np.ndarray, amount: float = 0.8, sigma: float = 2.0) -> np.ndarray:
    """Unsharp-mask ringing: bright/dark rims along every edge, as pyramid/wavelet fusion leaves them."""
    return np.clip(img + amount * (img - blur(img, sigma)), 0, 1)


@pytest.fixture
def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A step-edge scene (bright disc on dark ground) with texture, and a two-image focal stack of it."""
    yy, xx = np.mgrid[:96, :96]
    img = np.where((yy - 48) ** 2 + (xx - 40) ** 2 < 25**2, 0.75, 0.25)
    img = img + 0.05 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    a, b = two_focus(img, sigma=3.0)
    return img, a, b


@pytest.mark.parametrize("fn", [halo, overshoot], ids=lambda f: f.__name__)
def test_identical_to_a_source_and_gather_score_zero(fn, scene):
    img, a, b = scene
    assert fn(a, [a, b]) == 0.0
    assert fn(b, [a, b]) == 0.0
    rng = np.random.default_rng(0)
    pick = rng.integers(0, 2, img.shape)  # an arbitrary per-pixel gather from the sources
    assert fn(np.where(pick == 0, a, b), [a, b]) == pytest.approx(0.0, abs=1e-3 if fn is halo else 0)


@pytest.mark.parametrize("fn", [halo, overshoot], ids=lambda f: f.__name__)
def test_ringing_halo_scores_worse_than_clean(fn, scene):
    img, a, b = scene
    clean = fn(img, [a, b])
    assert clean < 1e-3
    values = [fn(_ringing(img, amount), [a, b]) for amount in (0.3, 0.6, 1.2)]
    assert values[0] > clean + 1e-3
    assert all(x < y for x, y in itertools.pairwise(values)), values


def test_blend_has_no_overshoot(scene):
    _img, a, b = scene
    assert overshoot(0.3 * a + 0.7 * b, [a, b]) == 0.0


def test_bounds_radius_and_errors(scene):
    img, a, b = scene
    h = halo(_ringing(img, 1.2), np.stack([a, b]))
    assert 0 < h < 1
    assert halo(_ringing(img, 1.2), [a, b], radius=3) <= h  # a wider neighbourhood supports more gradients
    assert halo(np.full_like(img, 0.5), [a, b]) == 0.0
    with pytest.raises(ValueError, match="radius"):
        halo(img, [a, b], radius=-1)
    u = [np.rint(x * 255).astype(np.uint8) for x in (_ringing(img), a, b)]
    assert overshoot(u[0], u[1:], data_range=255) == pytest.approx(overshoot(u[0] / 255, [x / 255 for x in u[1:]]))
