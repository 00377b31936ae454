"""Q^AB/F against an independent NumPy/SciPy transcription of the reference MATLAB code, closed forms and properties."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from _metric_helpers import blur, two_focus
from scipy.signal import convolve2d

from metrics import qabf
from metrics.qabf import QABF_CONSTANTS

PERFECT = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))  # Qg(G=1) * Qa(A=1)


def _reference_qabf(fused: np.ndarray, sources: list[np.ndarray]) -> float:
    """The published algorithm written from the MATLAB reference (conv2 'same', atan, constants of the paper)."""
    h1 = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h3 = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def edges(x):
        sx, sy = convolve2d(x, h3, mode="same"), convolve2d(x, h1, mode="same")
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(sx == 0, np.pi / 2, np.arctan(sy / sx))
        return np.hypot(sx, sy), a

    g_f, a_f = edges(fused * 255)
    num = den = 0.0
    for s in sources:
        g_s, a_s = edges(s * 255)
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(g_s > g_f, g_f / g_s, np.where(g_s == g_f, 1.0, g_s / g_f))
        a = 1 - np.abs(a_s - a_f) / (np.pi / 2)
        q = 0.9994 / (1 + np.exp(-15 * (g - 0.5))) * 0.9879 / (1 + np.exp(-22 * (a - 0.8)))
        num += np.sum(q * g_s)
        den += np.sum(g_s)
    return num / den


@pytest.mark.parametrize("sigma", [0.0, 1.0, 3.0])
def test_matches_reference_transcription(gray, sigma):
    a, b = two_focus(gray)
    fused = blur(gray, sigma) if sigma else gray
    assert qabf(fused, [a, b]) == pytest.approx(_reference_qabf(fused, [a, b]), abs=1e-9)
    avg = (a + b) / 2
    assert qabf(avg, np.stack([a, b])) == pytest.approx(_reference_qabf(avg, [a, b]), abs=1e-9)


def test_perfect_transfer_closed_form(gray):
    assert PERFECT == pytest.approx(0.97479, abs=1e-5)
    assert qabf(gray, [gray]) == pytest.approx(PERFECT, abs=1e-12)
    assert qabf(gray, [gray, gray, gray]) == pytest.approx(PERFECT, abs=1e-12)


def test_symmetric_in_sources_and_linear_in_n(gray):
    a, b = two_focus(gray)
    c = blur(gray, 1.5)
    q = qabf(gray, [a, b, c])
    assert qabf(gray, [c, a, b]) == pytest.approx(q, abs=1e-12)
    assert qabf(gray, [b, c, a]) == pytest.approx(q, abs=1e-12)


def test_ground_truth_beats_blurred_and_decreases_with_blur(gray):
    a, b = two_focus(gray)
    values = [qabf(blur(gray, s) if s else gray, [a, b]) for s in (0, 1, 2, 4)]
    assert all(x > y for x, y in itertools.pairwise(values)), values
    assert 0 <= values[-1] <= PERFECT


def test_rgb_uses_luma_and_uint8_equals_float(rgb):
    a, b = two_focus(rgb)
    w = np.array([0.299, 0.587, 0.114])[:, None, None]
    luma = qabf((rgb * w).sum(0), [(a * w).sum(0), (b * w).sum(0)])
    assert qabf(rgb, [a, b]) == pytest.approx(luma, abs=1e-12)
    a8, b8, f8 = (np.rint(x * 255).astype(np.uint8) for x in (a, b, rgb))
    assert qabf(f8, [a8, b8], data_range=255) == pytest.approx(qabf(f8 / 255, [a8 / 255, b8 / 255]), abs=1e-12)


def test_batch_and_torch(gray):
    a, b = two_focus(gray)
    f = np.stack([gray, blur(gray, 2)])[:, None]  # (2, 1, H, W)
    s = np.stack([np.stack([a, b])[:, None]] * 2)  # (2, 2, 1, H, W)
    out = qabf(f, s)
    assert out.shape == (2,)
    assert out[1] == pytest.approx(qabf(blur(gray, 2), [a, b]))
    t = qabf(torch.from_numpy(f).float(), torch.from_numpy(s).float())
    assert t.dtype == torch.float32 and torch.allclose(t.double(), torch.from_numpy(out), atol=1e-5)


def test_flat_sources_give_nan_and_bad_input_raises(gray):
    assert math.isnan(qabf(gray, [np.zeros_like(gray)]))  # zero padding: only black has no border edge
    with pytest.raises(ValueError, match="one more axis"):
        qabf(gray, gray)
    with pytest.raises(ValueError, match="fused image's shape"):
        qabf(gray, [gray[:, :-1]])
    with pytest.raises(ValueError, match="constants must be among"):
        qabf(gray, [gray], Tq=1.0)
    assert set(QABF_CONSTANTS) == {"L", "Tg", "kg", "Dg", "Ta", "ka", "Da"}
