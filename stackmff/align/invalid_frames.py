"""Invalid frames: layers that must not steer the alignment (over/under-exposed, blank or unrelated, much noisier,
blurred everywhere). They are never the reference, never the brightness target, never shrink the crop, and no other
layer is chained through them; :func:`stackmff.align.align_stack` reports them (warning, ``invalid``)."""

from __future__ import annotations

import numpy as np

from .._layer_stats import lowpass_deviation, noise_std

# the thresholds of V3's outlier rejection (stackmff.fusion.outliers.photometric/noise_outliers)
_PHOTOMETRIC_THRESHOLD, _PHOTOMETRIC_RATIO = 0.05, 4.0
_NOISE_THRESHOLD, _NOISE_RATIO = 0.033, 2.5
_BLUR_RATIO = 0.3  # a layer never above this share of the best valid layer's Laplacian energy is blurred everywhere


def _invalid_frames(images: np.ndarray, energy: np.ndarray) -> dict[int, str]:
    """Frames that must not steer the alignment, with the reason: over/under-exposed, blank or unrelated (low-pass
    luma far from the stack's median), much noisier, or blurred everywhere (sharp nowhere the others are).

    The first two use the same measurements and thresholds as V3's outlier rejection
    (:func:`stackmff.fusion.outliers.outlier_layers`). Blurred everywhere: on the textured patches, a valid layer
    is the sharpest (or nearly: its neighbours in focus) somewhere; a layer whose Laplacian energy stays below
    ``_BLUR_RATIO`` of the patch's best valid layer on every patch is not in focus anywhere. Never more than all
    but two layers are marked.
    """
    n = len(images)
    out: dict[int, str] = {}
    if n < 3:
        return out
    dev = lowpass_deviation(images)
    bright = (dev > _PHOTOMETRIC_THRESHOLD) & (dev > _PHOTOMETRIC_RATIO * np.median(dev))
    # the noise estimate on every sixth band of 32 rows: the same measure as V3's on a sixth of the pixels (it would
    # otherwise be half the cost of the registered check); noise is uniform, so the bands suffice
    h = images.shape[2]

    def bands(k: int) -> np.ndarray:
        layer = images[k]
        if h <= 192:
            return np.asarray(layer[:, :, :], np.float32)
        return np.concatenate([np.asarray(layer[:, y : y + 32], np.float32) for y in range(0, h, 192)], axis=1)

    sig = np.array([noise_std(bands(k)) for k in range(n)])
    noisy = (sig > _NOISE_THRESHOLD) & (sig > _NOISE_RATIO * np.median(sig))
    for k in range(n):
        if bright[k]:
            out[k] = "exposure/blank/unrelated"
        elif noisy[k]:
            out[k] = "much noisier"
    rest = [k for k in range(n) if k not in out]
    if len(rest) >= 3:
        best = energy[rest].max(0)  # (K,)
        textured = best > 0.1 * np.median(best)
        if textured.sum() >= 4:
            peak = (energy[:, textured] / best[textured]).max(1)  # (N,)
            for k in rest:
                if peak[k] < _BLUR_RATIO:
                    out[k] = "blurred everywhere"
    if n - len(out) < 2:
        return {}
    return out
