"""Entropy, MI and NMI against scikit-image and information-theoretic identities."""

from __future__ import annotations

import numpy as np
import pytest
from _metric_helpers import blur, two_focus
from skimage.measure import shannon_entropy
from skimage.metrics import normalized_mutual_information as skimage_nmi

from metrics import entropy, mutual_information, normalized_mutual_information


def _full_range_u8(img: np.ndarray) -> np.ndarray:
    """uint8 image that contains both 0 and 255, so skimage's min-max histogram bins are the 256 integer levels."""
    u8 = np.rint(img * 255).astype(np.uint8)
    u8.flat[0], u8.flat[1] = 0, 255
    return u8


def test_entropy_matches_skimage(gray, rgb):
    g8 = np.rint(gray * 255).astype(np.uint8)
    assert entropy(g8, data_range=255) == pytest.approx(shannon_entropy(g8), abs=1e-12)
    assert entropy(gray) == pytest.approx(shannon_entropy(g8), abs=1e-12)
    assert 0 < entropy(rgb) <= 8


def test_entropy_closed_forms():
    assert entropy(np.full((8, 8), 0.3)) == 0.0
    ramp = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert entropy(ramp, data_range=255) == pytest.approx(8.0)


def test_mi_of_image_with_itself_is_its_entropy(gray):
    assert mutual_information(gray, [gray]) == pytest.approx(entropy(gray), abs=1e-9)
    assert normalized_mutual_information(gray, [gray]) == pytest.approx(1.0, abs=1e-12)


def test_nmi_matches_skimage_studholme_relation(gray):
    a, b = (_full_range_u8(x) for x in two_focus(gray))
    f = _full_range_u8(blur(gray, 1.0))
    # skimage's Y = (H(F) + H(S)) / H(F, S) and MI = H(F) + H(S) - H(F, S) give 2 MI / (H(F) + H(S)) = 2 (1 - 1 / Y)
    expected = sum(2 * (1 - 1 / skimage_nmi(f, s, bins=256)) for s in (a, b))
    assert normalized_mutual_information(f, [a, b], data_range=255) == pytest.approx(expected, abs=1e-9)
    # MI = (H(F) + H(S)) (1 - 1 / Y)
    expected_mi = sum((shannon_entropy(f) + shannon_entropy(s)) * (1 - 1 / skimage_nmi(f, s, bins=256)) for s in (a, b))
    assert mutual_information(f, [a, b], data_range=255) == pytest.approx(expected_mi, abs=1e-9)


def test_symmetric_in_sources_reduction_and_bounds(gray):
    a, b = two_focus(gray)
    c = blur(gray, 2.0)
    m = mutual_information(gray, [a, b, c])
    assert mutual_information(gray, [c, b, a]) == pytest.approx(m, abs=1e-12)
    assert mutual_information(gray, [a, b, c], reduction="mean") == pytest.approx(m / 3, abs=1e-12)
    n = normalized_mutual_information(gray, [a, b, c], reduction="mean")
    assert 0 < n < 1
    with pytest.raises(ValueError, match="reduction must be one of"):
        mutual_information(gray, [a], reduction="max")


def test_independent_noise_has_near_zero_mi():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (2, 512, 512), dtype=np.uint8)
    # true MI is 0; the plug-in estimate's bias is about 255^2 / (2 n ln 2) = 0.18 bits for n = 512^2
    assert mutual_information(x, [y], data_range=255) < 0.25
    assert mutual_information(x, [x], data_range=255) > 7.9


def test_uint8_equals_float_and_batch(rgb):
    a, b = two_focus(rgb)
    u = [np.rint(x * 255).astype(np.uint8) for x in (rgb, a, b)]
    v8 = mutual_information(u[0], [u[1], u[2]], data_range=255)
    assert v8 == pytest.approx(mutual_information(u[0] / 255, [u[1] / 255, u[2] / 255]), abs=1e-12)
    batch = normalized_mutual_information(np.stack([rgb, a]), np.stack([np.stack([a, b])] * 2))
    assert batch.shape == (2,)
    assert batch[1] == pytest.approx(normalized_mutual_information(a, [a, b]))
