"""Helpers the metric tests import directly (``from _metric_helpers import ...``)."""

from __future__ import annotations

import cv2
import numpy as np


def blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``(H, W)`` or ``(C, H, W)``."""
    if sigma <= 0:
        return img.copy()
    if img.ndim == 2:
        return cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.stack([cv2.GaussianBlur(c, (0, 0), sigma, borderType=cv2.BORDER_REFLECT) for c in img])


def two_focus(img: np.ndarray, sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """A two-image focal 'stack': A sharp on the left half, B sharp on the right half."""
    b = blur(img, sigma)
    w = img.shape[-1] // 2
    a, bb = img.copy(), img.copy()
    a[..., w:] = b[..., w:]
    bb[..., :w] = b[..., :w]
    return a, bb
