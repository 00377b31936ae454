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
it won. The finest level (3/4 of a pyramid) is never held for the whole image: levels >= 1 are built from each
layer's half-resolution Gaussian level (computed in row strips), then level 0 is decided, filled and added to the
rebuilt image strip by strip with a margin that makes every strip exact, as in
:func:`~stackmff.fusion.pyramid_blend.pyramid_blend`; the result equals the whole-image computation. Working memory
besides the stack and the output image: ~10 bytes per pixel (the half-resolution pyramids and selection maps) plus
strips. Colour layers are decomposed per channel with the decision taken on luma (coefficients are linear, so the
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
from ._common import (
    auto_levels,
    layer,
    luma,
    luma_hwc,
    majority_filter,
    prepare_stack,
    pyr_down_strips,
    running_argmax,
    to_hwc,
)
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
    strip_rows: int = 256,
) -> FusionResult:
    """Fuse a focal stack in the Laplacian-pyramid domain.

    Args:
        stack: ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3, N >= 2.
        levels: number of detail levels; ``None`` = until the coarsest level is about 8 px on its short side.
        window: salience window (odd); 1 = plain max-abs (Zerene PMax style).
        consistency: majority-filter window applied to each level's selection map (odd; <= 1 disables it).
        base: ``"average"`` = mean of the layers' coarsest levels (Burt & Kolczynski), ``"focus"`` = coarsest level
            of the layer with the largest Laplacian-energy focus measure at that position.
        strip_rows: rows per strip of the full-resolution level (the result does not depend on it).

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

    strip_rows = max(2, int(strip_rows) // 2 * 2)  # even: strips keep the pyramids' 2:1 row phase
    c = stack.shape[1]

    def rows(k: int, r0: int, r1: int) -> np.ndarray:  # (rows, W) or (rows, W, 3) float32 of layer k
        return to_hwc(np.asarray(stack[k][:, r0:r1], np.float32))

    def coarse_bands(k: int) -> list[np.ndarray]:
        # levels 1..L of layer k's pyramid: the pyramid of its half-resolution Gaussian level, built in strips
        g1 = pyr_down_strips(lambda r0, r1: rows(k, r0, r1).reshape(r1 - r0, w, c), h, strip_rows)
        return build_laplacian_pyramid(g1[..., 0] if c == 1 else g1, levels - 1)

    def salience(k: int) -> list[np.ndarray]:  # layer k's salience at every level (and focus measure on the base)
        bands = coarse_bands(k)
        sal = [_salience(luma_hwc(b), window) for b in bands[:-1]]
        if base == "focus":
            sal.append(_base_focus(layer(stack, k), bands[-1].shape))
        return sal

    # levels >= 1, pass 1: running argmax of the salience at every level
    choice = [majority_filter(ch, consistency) for ch in running_argmax(salience(k) for k in range(n))]

    # levels >= 1, pass 2: copy every layer's winning coefficients into the fused pyramid, collapse it to level 1
    fused: list[np.ndarray] | None = None
    for k in range(n):
        bands = coarse_bands(k)
        if fused is None:
            fused = [np.zeros_like(b) for b in bands]
        for lev, band in enumerate(bands):
            if lev == levels - 1 and base == "average":
                fused[lev] += band / np.float32(n)
                continue
            mask = choice[lev] == k
            fused[lev][mask] = band[mask]
        del bands
    assert fused is not None
    del choice
    low = collapse_laplacian_pyramid(fused)  # the fused image at level 1 (half resolution)
    low = low.reshape(*low.shape[:2], c)
    del fused

    # level 0 and the rebuilt image, strip by strip with a margin that makes every strip exact: the finest band
    # reaches +-6 rows (pyrDown + pyrUp), the salience box and the majority filter their half windows
    margin = 2 * -(-(6 + window // 2 + max(consistency, 1) // 2) // 2)
    image = np.empty((c, h, w), np.float32)
    h1 = low.shape[0]
    for y0 in range(0, h, strip_rows):
        y1 = min(h, y0 + strip_rows)
        a0, a1 = max(0, y0 - margin), min(h, y1 + margin)

        def band0(k: int, a0: int = a0, a1: int = a1) -> np.ndarray:
            x = rows(k, a0, a1)
            down = cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101)
            return x - cv2.pyrUp(down, dstsize=(w, a1 - a0), borderType=cv2.BORDER_REFLECT_101)

        (choice0,) = running_argmax([_salience(luma_hwc(band0(k)), window)] for k in range(n))
        choice0 = majority_filter(choice0, consistency)
        detail = None
        for k in range(n):
            b = band0(k)
            if detail is None:
                detail = np.zeros_like(b)
            mask = choice0 == k
            detail[mask] = b[mask]
        detail = detail.reshape(a1 - a0, w, c)[y0 - a0 : y1 - a0]
        b0, b1 = max(0, y0 // 2 - 2), min(h1, (y1 + 1) // 2 + 2)
        up_h = 2 * (b1 - b0) - (1 if b1 == h1 and h % 2 else 0)  # the full image's odd last row, if it is here
        up = cv2.pyrUp(low[b0:b1], dstsize=(w, up_h), borderType=cv2.BORDER_REFLECT_101).reshape(up_h, w, c)
        strip = up[y0 - 2 * b0 : y1 - 2 * b0] + detail
        np.clip(strip, 0.0, 1.0, out=strip)
        image[:, y0:y1] = strip.transpose(2, 0, 1)
    return FusionResult(image=image, extras={"levels": levels, "base": base})


def _base_focus(layer: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    fm = focus_measure(luma(layer), window=2.0)
    return cv2.resize(fm, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
