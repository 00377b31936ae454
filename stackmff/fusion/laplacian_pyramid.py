"""Laplacian-pyramid fusion with max-abs selection and a consistency check.

The family of Zerene Stacker "PMax", Helicon Focus "method C" and enfuse ``--hard-mask``: every layer is split into
a Laplacian pyramid (Burt & Adelson); at every level and pixel the detail coefficient with the largest salience is
kept; the base (coarsest Gaussian) level is the mean of the layers (Burt & Kolczynski) or taken from the layer with
the highest focus measure; the fused pyramid is collapsed. Salience is the local energy of the luma coefficient in a
small window (Burt & Kolczynski's "salience"; ``window=1`` is plain max-abs). The selection map of each level is then
passed through a majority filter (their "consistency verification"), so that isolated decisions that disagree with
their neighbourhood, typically noise, follow it.

Pyramid fusion creates new values (not a gather from one layer), so the result is clipped to [0, 1]; it has no
per-pixel source index. Two passes over the layers keep memory at one pyramid plus the selection maps: pass 1 finds
the per-level decisions (running max of salience), pass 2 rebuilds each layer's pyramid and copies the coefficients
it won. Colour layers are decomposed per channel with the decision taken on luma (coefficients are linear, so the
luma of the coefficients is the coefficient of the luma) and applied to all channels alike, which keeps colours.

References:
    P. J. Burt and E. H. Adelson, "The Laplacian pyramid as a compact image code", IEEE Trans. Communications
    31(4), 1983. doi:10.1109/TCOM.1983.1095851
    P. J. Burt and R. J. Kolczynski, "Enhanced image capture through fusion", ICCV 1993.
    doi:10.1109/ICCV.1993.378222
    A. Mertens, J. Kautz and F. Van Reeth, "Exposure fusion", Pacific Graphics 2007 (enfuse).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from .._checks import check_choice
from ..errors import StackMFFError
from ._common import auto_levels, luma, luma_hwc, majority_filter, prepare_stack, to_chw, to_hwc
from .focus_measure import focus_measure
from .registry import FusionResult, register_method

__all__ = ["build_laplacian_pyramid", "collapse_laplacian_pyramid", "fuse_laplacian_pyramid"]


def build_laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Laplacian pyramid of an ``(H, W)`` or ``(H, W, 3)`` float32 image.

    Returns:
        ``levels`` detail bands (finest first, each the size of its Gaussian level) followed by the coarsest Gaussian
        level: ``levels + 1`` arrays. :func:`collapse_laplacian_pyramid` inverts it exactly (up to rounding).
    """
    bands = []
    current = image
    for _ in range(levels):
        down = cv2.pyrDown(current, borderType=cv2.BORDER_REFLECT_101)
        up = cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0]), borderType=cv2.BORDER_REFLECT_101)
        bands.append(current - up)
        current = down
    bands.append(current)
    return bands


def collapse_laplacian_pyramid(bands: list[np.ndarray]) -> np.ndarray:
    """Rebuild the image from :func:`build_laplacian_pyramid` bands."""
    current = bands[-1]
    for band in reversed(bands[:-1]):
        current = cv2.pyrUp(current, dstsize=(band.shape[1], band.shape[0]), borderType=cv2.BORDER_REFLECT_101) + band
    return current


def _salience(coef_luma: np.ndarray, window: int) -> np.ndarray:
    energy = coef_luma * coef_luma
    if window <= 1:
        return energy
    return cv2.boxFilter(energy, cv2.CV_32F, (window, window), borderType=cv2.BORDER_REFLECT_101)


@register_method(
    "laplacian_pyramid", "Laplacian pyramid, max-salience details + majority consistency (PMax/enfuse-like)"
)
def fuse_laplacian_pyramid(
    stack: np.ndarray,
    *,
    levels: int | None = None,
    window: int = 3,
    consistency: int = 3,
    base: Literal["average", "focus"] = "average",
) -> FusionResult:
    """Fuse a focal stack in the Laplacian-pyramid domain.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        levels: number of detail levels; ``None`` = until the coarsest level is about 8 px on its short side.
        window: salience window (odd); 1 = plain max-abs (Zerene PMax style).
        consistency: majority-filter window applied to each level's selection map (odd; <= 1 disables it).
        base: ``"average"`` = mean of the layers' coarsest levels (Burt & Kolczynski), ``"focus"`` = coarsest level
            of the layer with the largest Laplacian-energy focus measure at that position.

    Returns:
        :class:`FusionResult` with ``image (C, H, W)`` clipped to [0, 1]; no index map (a blend, not a gather).

    Raises:
        StackMFFError: bad stack, bad ``levels`` or unknown ``base``.
    """
    stack = prepare_stack(stack)
    check_choice(base, ("average", "focus"), "base")
    n, _, h, w = stack.shape
    if levels is None:
        levels = auto_levels(h, w)
    if levels < 1 or min(h, w) < 2**levels:
        raise StackMFFError(f"levels must be between 1 and log2(min(H, W)) = {int(np.log2(min(h, w)))}, got {levels}.")

    # pass 1: running argmax of the salience at every level (and of the focus measure on the base, if asked)
    best: list[np.ndarray] = []
    choice: list[np.ndarray] = []
    for k in range(n):
        bands = build_laplacian_pyramid(to_hwc(stack[k]), levels)
        if base == "focus":
            sal_list = [*(_salience(luma_hwc(b), window) for b in bands[:-1]), _base_focus(stack[k], bands[-1].shape)]
        else:
            sal_list = [_salience(luma_hwc(b), window) for b in bands[:-1]]
        for lev, sal in enumerate(sal_list):
            if k == 0:
                best.append(sal)
                choice.append(np.zeros(sal.shape, np.int32))
            else:
                better = sal > best[lev]
                best[lev] = np.where(better, sal, best[lev])
                choice[lev][better] = k
    del best
    choice = [majority_filter(c, consistency) for c in choice]

    # pass 2: copy every layer's winning coefficients into the fused pyramid
    fused: list[np.ndarray] | None = None
    for k in range(n):
        bands = build_laplacian_pyramid(to_hwc(stack[k]), levels)
        if fused is None:
            fused = [np.zeros_like(b) for b in bands]
        for lev, band in enumerate(bands):
            if lev == levels and base == "average":
                fused[lev] += band / np.float32(n)
                continue
            mask = choice[lev] == k
            fused[lev][mask] = band[mask]
    assert fused is not None
    image = np.clip(collapse_laplacian_pyramid(fused), 0.0, 1.0)
    return FusionResult(image=to_chw(image), extras={"levels": levels, "base": base})


def _base_focus(layer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    fm = focus_measure(luma(layer), window=2.0)
    return cv2.resize(fm, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
