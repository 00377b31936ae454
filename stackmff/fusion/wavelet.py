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
layer and copies the coefficients it won. The finest level (3/4 of the coefficients) is never held for the whole
image: the coarser levels are the transform of each layer's finest approximation band (computed in row strips), and
the finest level is decided, fused and inverted strip by strip with the margins its filters and the majority filter
need, so the result equals the whole-image transform's. The result is clipped to [0, 1]; there is no per-pixel index map.

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
from ._common import auto_levels, layer_rows, luma_hwc, majority_filter, prepare_stack, running_argmax, to_hwc
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
    strip_rows: int = 256,
) -> FusionResult:
    """Fuse a focal stack in the wavelet domain.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        wavelet: a discrete PyWavelets wavelet name (``pywt.wavelist(kind="discrete")``).
        levels: decomposition levels; ``None`` = until the coarsest band is about 8 px on its short side, capped by
            ``pywt.dwt_max_level``.
        consistency: majority-filter window of each scale's decision map (odd; <= 1 disables it).
        strip_rows: image rows per strip of the finest level (the result does not depend on it).

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` clipped to [0, 1]; no index map (coefficients from several
        layers are combined).

    Raises:
        StackMFFError: bad stack, unknown wavelet or bad ``levels``.
    """
    stack = prepare_stack(stack)
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise StackMFFError(f"wavelet must be a discrete PyWavelets wavelet such as bior4.4 or db4, got {wavelet!r}.")
    n, c, h, w = stack.shape
    max_level = pywt.dwt_max_level(min(h, w), pywt.Wavelet(wavelet).dec_len)
    if levels is None:
        levels = max(1, min(auto_levels(h, w), max_level))
    if not 1 <= levels <= max(max_level, 1):
        raise StackMFFError(f"levels must be between 1 and {max(max_level, 1)} for a {h}x{w} image, got {levels}.")

    dec_len = pywt.Wavelet(wavelet).dec_len
    # (no discrete PyWavelets wavelet has an odd filter, which the strips' 2:1 phase assumes)
    strip_rows = h if dec_len % 2 else max(2, int(strip_rows))
    n1 = pywt.dwt_coeff_len(h, dec_len, "symmetric")  # rows of the finest level's coefficients
    m1 = pywt.dwt_coeff_len(w, dec_len, "symmetric")

    # (*) every strip transformed or inverted spans at least 2-3 filter lengths: on the few rows of a short last (or
    # first) strip PyWavelets' symmetric extension takes other arithmetic than inside the whole image (measured:
    # other bits, then other decisions), so a short strip is widened towards the image's inside

    def finest(k: int, c0: int, c1: int) -> tuple:
        # the finest level (cA_1, (cH_1, cV_1, cD_1)) of layer k, coefficient rows c0:c1, exactly as the whole
        # image's: coefficient row o is made from image rows 2o + 2 - dec_len .. 2o + 1 (symmetric border)
        a0, a1 = max(0, 2 * c0 - (dec_len - 2)), min(h, 2 * c1)
        a0, a1 = max(0, min(a0, (h - 3 * dec_len) // 2 * 2)), min(h, max(a1, a0 + 3 * dec_len))  # never short (*)
        ca, bands = pywt.dwt2(to_hwc(layer_rows(stack, k, a0, a1)), wavelet, mode="symmetric", axes=(0, 1))
        cut = slice(c0 - a0 // 2, c1 - a0 // 2)
        return ca[cut], tuple(b[cut] for b in bands)

    def approximation(k: int) -> np.ndarray:  # cA_1 of layer k, built in strips
        ca = None
        for c0 in range(0, n1, max(1, strip_rows // 2)):
            c1 = min(n1, c0 + max(1, strip_rows // 2))
            part = finest(k, c0, c1)[0]
            if ca is None:
                ca = np.empty((n1, *part.shape[1:]), part.dtype)
            ca[c0:c1] = part
        return ca

    def transform(k: int) -> list:
        # the coarser levels of layer k: [cA_n, (cH_n, cV_n, cD_n), ..., (cH_2, cV_2, cD_2)], the transform of cA_1
        # (the whole image's wavedec2 is dwt2 level after level); axes (0, 1) keep colour channels apart
        with warnings.catch_warnings():  # tiny images: pywt warns that every coefficient touches the border
            warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
            return pywt.wavedec2(approximation(k), wavelet, mode="symmetric", level=levels - 1, axes=(0, 1))

    def activity(k: int) -> list[np.ndarray]:  # layer k's per-scale activity (its transform is not kept)
        return [_activity(bands).astype(np.float32) for bands in transform(k)[1:]]

    # levels >= 2, pass 1: running argmax of the per-scale activity
    choice = [majority_filter(ch, consistency) for ch in running_argmax(activity(k) for k in range(n))]

    # levels >= 2, pass 2: average lowpass, copy the winning highpass coefficients; collapse to the fused cA_1
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
        del coeffs
    assert fused is not None
    del choice
    low = pywt.waverec2(fused, wavelet, mode="symmetric", axes=(0, 1))[:n1, :m1] if levels > 1 else fused[0]
    del fused

    # the finest level and the image, strip by strip: image rows y0:y1 are rebuilt from coefficient rows
    # y0/2 .. (y1 + dec_len - 1)/2, whose decisions need the majority filter's half window more
    margin = max(consistency, 1) // 2
    image = np.empty((c, h, w), np.float32)
    for y0 in range(0, h, max(2, strip_rows // 2 * 2)):
        y1 = min(h, y0 + max(2, strip_rows // 2 * 2))
        c0, c1 = y0 // 2, min(n1, (y1 + dec_len - 1) // 2)
        c0, c1 = max(0, min(c0, n1 - 2 * dec_len)), min(n1, max(c1, c0 + 2 * dec_len))  # never short (*)
        e0, e1 = max(0, c0 - margin), min(n1, c1 + margin)
        (choice1,) = running_argmax([_activity(finest(k, e0, e1)[1]).astype(np.float32)] for k in range(n))
        choice1 = majority_filter(choice1, consistency)[c0 - e0 : c1 - e0]
        detail = None
        for k in range(n):
            bands = finest(k, c0, c1)[1]
            if detail is None:
                detail = tuple(np.zeros_like(b) for b in bands)
            mask = choice1 == k
            for target, band in zip(detail, bands):
                target[mask] = band[mask]
        rec = pywt.idwt2((low[c0:c1], detail), wavelet, mode="symmetric", axes=(0, 1))[y0 - 2 * c0 : y1 - 2 * c0, :w]
        for ch in range(c):  # clipped channel by channel
            np.clip(rec if c == 1 else rec[..., ch], 0.0, 1.0, out=image[ch, y0:y1])
    return FusionResult(image=image, extras={"wavelet": wavelet, "levels": levels})
