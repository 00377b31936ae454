"""Metrics on a real Lytro multi-focus pair (../shared/data, research use only: skipped when absent)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _helpers import SHARED_DATA

from metrics import halo, normalized_mutual_information, overshoot, qabf, scd
from stackmff.io import load_image

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def fusions():
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not available")
    shared = SHARED_DATA
    a, _ = load_image(shared / "mfifb_pairs" / "A" / "lytro_01.jpg")
    b, _ = load_image(shared / "mfifb_pairs" / "B" / "lytro_01.jpg")
    a, b = a[:, :256, :256], b[:, :256, :256]

    def energy(x):
        g = cv2.cvtColor(np.ascontiguousarray(x.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        return cv2.GaussianBlur(cv2.Laplacian(g, cv2.CV_32F) ** 2, (0, 0), 5)

    select = np.where(energy(a) >= energy(b), a, b)  # per-pixel gather of the sharper source
    ringing = np.clip(select + 0.8 * (select - np.stack([cv2.GaussianBlur(c, (0, 0), 2) for c in select])), 0, 1)
    return {"sources": [a, b], "select": select, "average": (a + b) / 2, "ringing": ringing}


def test_focus_selection_beats_averaging(fusions):
    s = fusions["sources"]
    for fn in (qabf, normalized_mutual_information, scd):
        assert fn(fusions["select"], s) > fn(fusions["average"], s) + 0.05, fn.__name__


def test_halo_measures_flag_only_the_ringing_result(fusions):
    s = fusions["sources"]
    for fn in (halo, overshoot):
        assert fn(fusions["select"], s) < 1e-3 and fn(fusions["average"], s) < 1e-3
        assert fn(fusions["ringing"], s) > 0.01
