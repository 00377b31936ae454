"""Wavelet extended-depth-of-field fusion in the style of Forster et al. 2004, on the PyWavelets DWT.

Forster, Van De Ville, Berent, Sage & Unser fuse microscopy stacks in the wavelet domain: every layer is transformed,
at every position of every highpass band the coefficient of largest modulus is kept, the decision maps are made
consistent (a local majority vote on the decisions, and the same decision for the subbands of one scale at one
position), the lowpass band is averaged, and the fused transform is inverted. Their complex Daubechies wavelets are
not in a maintained library (the ``dtcwt`` package cannot run on NumPy 2, ``np.asfarray`` was removed), so this uses
PyWavelets' real DWT with a symmetric biorthogonal wavelet (CDF 9/7, ``bior4.4``) and symmetric borders; the
consistency checks are what suppress the ringing of a shift-variant DWT.

Per scale: activity = sum over the three orientation bands of |luma coefficient| (coefficients are linear, so this is
the transform of the luma), decision = argmax over layers, then a ``consistency x consistency`` majority filter;
all channels and orientations at a position take the chosen layer's coefficients (colours stay consistent).
Two passes keep memory at one transform plus the decision maps: pass 1 runs the argmax, pass 2 re-transforms each
layer and copies the coefficients it won. The result is clipped to [0, 1]; there is no per-pixel index map.

References:
    B. Forster, D. Van De Ville, J. Berent, D. Sage and M. Unser, "Complex wavelets for extended depth-of-field:
    a new method for the fusion of multichannel microscopy images", Microscopy Research and Technique 65(1-2),
    33-42, 2004. doi:10.1002/jemt.20092
    G. R. Lee, R. Gommers, F. Wasilewski, K. Wohlfahrt and A. O'Leary, "PyWavelets: A Python package for wavelet
    analysis", JOSS 4(36), 1237, 2019. doi:10.21105/joss.01237
"""

from __future__ import annotations

import warnings

import numpy as np
import pywt

from ..errors import StackMFFError
from ._common import auto_levels, layer, luma_hwc, majority_filter, prepare_stack, to_chw, to_hwc
from .registry import FusionResult, register_method

__all__ = ["fuse_wavelet"]


def _activity(bands: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    return sum(np.abs(luma_hwc(b)) for b in bands)


@register_method("wavelet", "DWT (PyWavelets) max-modulus highpass with majority consistency, Forster 2004 style")
def fuse_wavelet(
    stack: np.ndarray,
    *,
    wavelet: str = "bior4.4",
    levels: int | None = None,
    consistency: int = 3,
) -> FusionResult:
    """Fuse a focal stack in the wavelet domain.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        wavelet: a discrete PyWavelets wavelet name (``pywt.wavelist(kind="discrete")``).
        levels: decomposition levels; ``None`` = until the coarsest band is about 8 px on its short side, capped by
            ``pywt.dwt_max_level``.
        consistency: majority-filter window of each scale's decision map (odd; <= 1 disables it).

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` clipped to [0, 1]; no index map (coefficients from several
        layers are combined).

    Raises:
        StackMFFError: bad stack, unknown wavelet or bad ``levels``.
    """
    stack = prepare_stack(stack)
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise StackMFFError(f"wavelet must be a discrete PyWavelets wavelet such as bior4.4 or db4, got {wavelet!r}.")
    n, _, h, w = stack.shape
    max_level = pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len)
    if levels is None:
        levels = max(1, min(auto_levels(h, w), max_level))
    if not 1 <= levels <= max(max_level, 1):
        raise StackMFFError(f"levels must be between 1 and {max(max_level, 1)} for a {h}x{w} image, got {levels}.")

    def transform(k: int) -> list:
        # [cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]: coarsest first; axes (0, 1) keep colour channels apart
        with warnings.catch_warnings():  # tiny images: pywt warns that every coefficient touches the border
            warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
            return pywt.wavedec2(to_hwc(layer(stack, k)), wavelet, mode="symmetric", level=levels, axes=(0, 1))

    # pass 1: running argmax of the per-scale activity
    best: list[np.ndarray] = []
    choice: list[np.ndarray] = []
    for k in range(n):
        coeffs = transform(k)
        for lev, bands in enumerate(coeffs[1:]):
            act = _activity(bands).astype(np.float32)
            if k == 0:
                best.append(act)
                choice.append(np.zeros(act.shape, np.int32))
            else:
                better = act > best[lev]
                best[lev] = np.where(better, act, best[lev])
                choice[lev][better] = k
    del best
    choice = [majority_filter(c, consistency) for c in choice]

    # pass 2: average lowpass, copy the winning highpass coefficients
    fused: list | None = None
    for k in range(n):
        coeffs = transform(k)
        if fused is None:
            fused = [np.zeros_like(coeffs[0])] + [tuple(np.zeros_like(b) for b in bands) for bands in coeffs[1:]]
        fused[0] += coeffs[0] / np.float32(n)
        for lev, bands in enumerate(coeffs[1:]):
            mask = choice[lev] == k
            for target, band in zip(fused[lev + 1], bands):
                target[mask] = band[mask]
    assert fused is not None
    image = pywt.waverec2(fused, wavelet, mode="symmetric", axes=(0, 1))[:h, :w]
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return FusionResult(image=to_chw(np.ascontiguousarray(image)), extras={"wavelet": wavelet, "levels": levels})
