"""SF, AG, SD and SCD: closed forms, NumPy references and properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _metric_helpers import blur, two_focus

from metrics import average_gradient, scd, spatial_frequency, standard_deviation


def test_spatial_frequency_closed_forms():
    stripes = np.tile([0, 255], (6, 3)).astype(np.uint8)  # vertical stripes: every horizontal step is 255
    assert spatial_frequency(stripes, data_range=255) == pytest.approx(255.0)
    ramp = np.tile(np.arange(10.0), (10, 1)) * 3  # slope 3 along x, 0 along y
    assert spatial_frequency(ramp, data_range=255) == pytest.approx(3.0)
    assert spatial_frequency(np.full((5, 5), 0.4)) == 0.0


def test_spatial_frequency_matches_numpy(gray):
    g = gray * 255
    rf = np.sqrt(np.mean(np.diff(g, axis=1) ** 2))
    cf = np.sqrt(np.mean(np.diff(g, axis=0) ** 2))
    assert spatial_frequency(gray) == pytest.approx(math.hypot(rf, cf), rel=1e-12)


def test_average_gradient_closed_form_and_numpy(gray):
    diag = np.add.outer(np.arange(8.0), np.arange(8.0)) * 2  # slope 2 along both axes -> sqrt((4 + 4) / 2) = 2
    assert average_gradient(diag, data_range=255) == pytest.approx(2.0)
    g = gray * 255
    dx, dy = g[:-1, 1:] - g[:-1, :-1], g[1:, :-1] - g[:-1, :-1]
    assert average_gradient(gray) == pytest.approx(np.mean(np.sqrt((dx**2 + dy**2) / 2)), rel=1e-12)


def test_standard_deviation_matches_numpy(gray, rgb):
    assert standard_deviation(gray) == pytest.approx(np.std(gray * 255), rel=1e-12)
    luma = (rgb * np.array([0.299, 0.587, 0.114])[:, None, None]).sum(0) * 255
    assert standard_deviation(rgb) == pytest.approx(np.std(luma), rel=1e-12)


@pytest.mark.parametrize("fn", [spatial_frequency, average_gradient, standard_deviation], ids=lambda f: f.__name__)
def test_decrease_under_increasing_blur(fn, rgb):
    values = [fn(blur(rgb, s)) for s in (0, 0.7, 1.5, 3.0)]
    assert all(a > b for a, b in itertools.pairwise(values)), values


@pytest.mark.parametrize("fn", [spatial_frequency, average_gradient, standard_deviation], ids=lambda f: f.__name__)
def test_uint8_equals_float_and_batch(fn, rgb):
    u8 = np.rint(rgb * 255).astype(np.uint8)
    assert fn(u8, data_range=255) == pytest.approx(fn(u8 / 255.0), rel=1e-12)
    out = fn(torch.from_numpy(np.stack([rgb, blur(rgb, 2)])))
    assert out.shape == (2,) and float(out[1]) == pytest.approx(fn(blur(rgb, 2)))


def test_scd_closed_form_and_symmetry(gray):
    a, b = two_focus(gray)
    a, b = a / 2, b / 2
    # F = A + B: F - B = A and F - A = B, so both correlations are exactly 1
    assert scd(a + b, [a, b]) == pytest.approx(2.0, abs=1e-12)
    f = blur(gray, 1.0) / 2
    assert scd(f, [a, b]) == pytest.approx(scd(f, [b, a]), abs=1e-12)
    assert -2 <= scd(f, [a, b]) <= 2


def test_scd_needs_exactly_two_sources(gray):
    with pytest.raises(ValueError, match="exactly 2"):
        scd(gray, [gray, gray, gray])
    assert math.isnan(scd(gray, [gray, np.zeros_like(gray)]))  # F - A = 0 is constant: correlation undefined
