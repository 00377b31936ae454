"""Fixtures for the metric tests: small crops of scikit-image's bundled natural images (BSD licensed)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data


@pytest.fixture(scope="session")
def gray() -> np.ndarray:
    """``(H, W)`` float64 in [0, 1]: a 96x128 crop of the cameraman."""
    return data.camera()[100:196, 180:308].astype(np.float64) / 255.0


@pytest.fixture(scope="session")
def rgb() -> np.ndarray:
    """``(3, H, W)`` float64 in [0, 1]: a 96x112 crop of the astronaut image."""
    return data.astronaut()[40:136, 180:292].transpose(2, 0, 1).astype(np.float64) / 255.0
