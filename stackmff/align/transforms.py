"""3x3 transform helpers: motion models, grid rescaling, pyramid levels, projection onto a model, corner shifts.

Matrices map homogeneous pixel coordinates of the template (reference) to those of the moving layer, pixel centres at
integer coordinates (the convention of :mod:`stackmff.align`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ALIGN_MODES"]

ALIGN_MODES = ("auto", "none", "translation", "similarity", "affine", "homography")


def _grid_scale(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel-centre coordinates of an ``src`` (H, W) grid to those of a resized ``dst`` grid."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _to_level(m: np.ndarray, k: int) -> np.ndarray:
    """Express a working-resolution matrix at pyramid level ``k`` (pyrDown: ``x_k = x_0 / 2**k``)."""
    s = np.diag([0.5**k, 0.5**k, 1.0])
    return s @ m @ np.linalg.inv(s)


def _from_level(m: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`_to_level`: a level-``k`` matrix at working resolution."""
    s = np.diag([2.0**k, 2.0**k, 1.0])
    return s @ m @ np.linalg.inv(s)


def _project(m: np.ndarray, mode: str, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Nearest matrix of the motion model ``mode`` (similarity: closest scaled rotation of the 2x2 part).

    With ``centre`` (x, y) the projection keeps where that point goes: projecting about the image origin instead
    moved the image centre by the dropped shear times the centre's distance to the corner (1.4 px measured on a
    640x360 phone stack).
    """
    m = m / m[2, 2]
    if mode == "homography":
        return m
    out = np.eye(3)
    out[:2, 2] = m[:2, 2]
    if mode == "affine":
        out[:2, :2] = m[:2, :2]
    elif mode == "similarity":
        p = 0.5 * (m[0, 0] + m[1, 1])
        q = 0.5 * (m[1, 0] - m[0, 1])
        out[:2, :2] = [[p, -q], [q, p]]
    if centre is not None:
        c = np.asarray(centre, np.float64)
        out[:2, 2] += (m[:2, :2] - out[:2, :2]) @ c
    return out


def _max_corner_shift(mats: np.ndarray, size: tuple[int, int]) -> float:
    """Largest displacement, in pixels, of an image corner under any of ``mats`` ``(K, 3, 3)``."""
    h, w = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T  # (3, 4)
    moved = mats @ corners  # (K, 3, 4)
    moved = moved[:, :2] / moved[:, 2:3]
    return float(np.abs(moved - corners[None, :2]).max()) if len(mats) else 0.0
