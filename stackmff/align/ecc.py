"""Coarse-to-fine ECC refinement of one link (template -> input layer) on Gaussian pyramids of luma.

OpenCV's ECC (``cv2.findTransformECC``) maximises a zero-mean normalised correlation, so it is blind to gain/offset,
and a symmetric defocus blur does not move image content. (Gradient-magnitude, difference-of-Gaussians and
pre-blurred inputs were measured too: larger corner errors on synthetic breathing stacks.) Levels smaller than
``_MODEL_SIZE`` px estimate a translation only. OpenCV's ECC has no similarity model; ``similarity`` runs the affine
model and projects each level's estimate on the nearest similarity about the image centre, which keeps it constrained
between levels. :func:`_phase_init` gives a translation to start from when nothing better is known.

References:
    G. D. Evangelidis, E. Z. Psarakis, "Parametric Image Alignment Using Enhanced Correlation Coefficient
    Maximization", IEEE TPAMI 30(10), 2008.
"""

from __future__ import annotations

import cv2
import numpy as np

from .transforms import _from_level, _project, _to_level

_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "similarity": cv2.MOTION_AFFINE,  # projected on a similarity after every pyramid level
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
_COARSEST = 64  # the pyramid stops once a level's longer side would drop below this many pixels
_MODEL_SIZE = 128  # levels with a smaller longer side estimate a translation only: too few pixels for more


def _features(luma: np.ndarray) -> np.ndarray:
    """The signal ECC aligns: luma itself (see the module notes on why not gradients)."""
    return luma


def _pyramid(img: np.ndarray) -> list[np.ndarray]:
    """Gaussian pyramid, finest first; level k has pixel-centre coordinates ``x_k = x_0 / 2**k``."""
    levels = [img]
    while max(levels[-1].shape) // 2 >= _COARSEST and min(levels[-1].shape) // 2 >= 16:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _ecc_pyramid(
    tmpl: list[np.ndarray],
    inp: list[np.ndarray],
    init: np.ndarray,
    mode: str,
    *,
    start_level: int | None = None,
    stop_level: int = 0,
) -> tuple[np.ndarray, float]:
    """Coarse-to-fine ECC of ``inp`` onto ``tmpl`` (pyramids, finest first) from ``init`` (level-0 matrix).

    Runs levels ``start_level`` (default the coarsest) down to ``stop_level``. Returns the level-0 matrix ``W``
    (template -> input coordinates) and the correlation at ``stop_level`` (NaN when ECC did not converge there).
    """
    m = init.copy()
    cc = float("nan")
    top = len(tmpl) - 1
    start = top if start_level is None else start_level
    for k in range(start, stop_level - 1, -1):
        # small levels: a translation only (from a rough start, more parameters on few pixels wander off)
        level_mode = mode if k == 0 or max(tmpl[k].shape) >= _MODEL_SIZE else "translation"
        motion = _MOTION[level_mode]
        mk = _to_level(m, k)
        warp = (mk if level_mode == "homography" else mk[:2]).astype(np.float32)
        iters = 100 if k == top else 50
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iters, 1e-5)
        try:
            cc, warp = cv2.findTransformECC(tmpl[k], inp[k], warp, motion, criteria, None, 3)
        except cv2.error:
            cc = float("nan")  # did not converge at this level: keep the previous estimate
            continue
        mk_new = np.vstack([warp.astype(np.float64), [0, 0, 1]]) if warp.shape[0] == 2 else warp.astype(np.float64)
        if level_mode == "translation":
            mk[:2, 2] = mk_new[:2, 2]  # the 2x2 part passed in is kept as it is
            m = _from_level(mk, k)
        else:
            m = _from_level(_project(mk_new, mode, ((tmpl[k].shape[1] - 1) / 2, (tmpl[k].shape[0] - 1) / 2)), k)
    return m, float(cc)


def _phase_init(tmpl: np.ndarray, inp: np.ndarray) -> np.ndarray:
    """Translation (template -> input coordinates) by phase correlation, at the level of the given images."""
    win = cv2.createHanningWindow(tmpl.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(tmpl, inp, win)
    m = np.eye(3)
    m[:2, 2] = dx, dy
    return m
