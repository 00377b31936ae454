"""Registration from ORB features + RANSAC: alignment's second initialisation when ECC fails or fits badly, and the
evaluation's registration of a fused result of another size onto the sources (:mod:`metrics.evaluate`)."""

from __future__ import annotations

import cv2
import numpy as np

from .._checks import check_choice
from .transforms import _project

__all__ = ["orb_transform"]


def orb_transform(
    src: np.ndarray,
    dst: np.ndarray,
    *,
    model: str = "homography",
    n_features: int = 2000,
    min_keypoints: int = 8,
    best_share: float = 1.0,
    min_matches: int = 8,
    min_inliers: int = 8,
) -> np.ndarray | None:
    """The transform mapping pixel coordinates of ``src`` to those of ``dst``, from ORB features and RANSAC.

    ORB keypoints of both images are matched by Hamming distance with a cross check (each match is the other's best)
    and the motion model is fitted to the matched positions by RANSAC (reprojection threshold 3 px).

    Args:
        src: ``(H, W)`` uint8 grayscale image.
        dst: ``(H', W')`` uint8 grayscale image (any size).
        model: ``homography`` (``cv2.findHomography``), ``affine`` (``cv2.estimateAffine2D``) or ``similarity``
            (rotation, uniform scale and shift: ``cv2.estimateAffinePartial2D``).
        n_features: at most this many ORB keypoints per image.
        min_keypoints: fewer keypoints in either image give None.
        best_share: keep this share of the matches, those with the smallest Hamming distance (at least
            ``min_matches``); ``1`` keeps every match, in detection order.
        min_matches: fewer matches give None.
        min_inliers: a fit with fewer RANSAC inliers gives None.

    Returns:
        ``(3, 3)`` float64 matrix (``x_dst = M @ x_src``; as RANSAC returns it, not normalised), or None when too
        little was found.

    Raises:
        StackMFFError: unknown ``model``.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> img = (cv2.GaussianBlur(rng.random((200, 240)), (0, 0), 2) * 2000 % 255).astype(np.uint8)
        >>> moved = cv2.warpAffine(img, np.float32([[1, 0, 5], [0, 1, -3]]), (240, 200))
        >>> np.round(orb_transform(img, moved, model="similarity")[:2, 2]).tolist()
        [5.0, -3.0]
    """
    check_choice(model, ("similarity", "affine", "homography"), "feature model")
    orb = cv2.ORB_create(nfeatures=n_features)
    k1, d1 = orb.detectAndCompute(src, None)
    k2, d2 = orb.detectAndCompute(dst, None)
    if d1 is None or d2 is None or len(k1) < min_keypoints or len(k2) < min_keypoints:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d1, d2)
    if best_share < 1:
        matches = sorted(matches, key=lambda m: m.distance)
        matches = matches[: max(min_matches, int(len(matches) * best_share))]
    if len(matches) < min_matches:
        return None
    p1 = np.float32([k1[mt.queryIdx].pt for mt in matches])
    p2 = np.float32([k2[mt.trainIdx].pt for mt in matches])
    if model == "homography":
        h, inl = cv2.findHomography(p1, p2, cv2.RANSAC, 3.0)
        if h is None or inl.sum() < min_inliers:
            return None
        return h
    est = cv2.estimateAffine2D if model == "affine" else cv2.estimateAffinePartial2D
    a, inl = est(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if a is None or inl.sum() < min_inliers:
        return None
    return np.vstack([a, [0, 0, 1]])


def _feature_init(tmpl: np.ndarray, inp: np.ndarray, mode: str) -> np.ndarray | None:
    """ORB + RANSAC estimate (template -> input coordinates) on two luma images; None when it finds too little."""

    def u8(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, (0.5, 99.5))
        return np.clip((x - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)

    model = mode if mode in ("affine", "homography") else "similarity"
    m = orb_transform(u8(tmpl), u8(inp), model=model)
    if m is None:
        return None
    if mode == "homography":
        return m / m[2, 2]
    return _project(m, mode, ((tmpl.shape[1] - 1) / 2, (tmpl.shape[0] - 1) / 2))
