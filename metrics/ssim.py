"""Structural similarity (Wang et al. 2004), full-reference; piq for RGB/gray, scikit-image for the papers' 8-bit gray.

References:
    Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error visibility to
    structural similarity", IEEE TIP 13(4), 2004.
"""

from __future__ import annotations

import piq
import torch
from skimage.metrics import structural_similarity

from ._validate import ArrayLike, check_min_size, finish, prepare_pair, prepare_reference
from .functional.color import to_gray8

__all__ = ["ssim", "ssim_gray8"]


def ssim(
    fused: ArrayLike,
    reference: ArrayLike,
    *,
    data_range: float = 1.0,
    color: str = "rgb",
    kernel_size: int = 11,
    kernel_sigma: float = 1.5,
    downsample: bool = False,
):
    """Mean SSIM with an 11x11 Gaussian window (sigma 1.5, K1 = 0.01, K2 = 0.03), via ``piq.ssim``.

    The map is evaluated where the window fits inside the image (no padding) and averaged over pixels and
    channels; this equals ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)`` (tested). ``downsample=True`` applies Wang's automatic downscaling for large images.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 11x11.
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` (mean over channels) or ``"gray"`` (Rec.601 luma).
        kernel_size: odd Gaussian window size.
        kernel_sigma: Gaussian window sigma.
        downsample: average-pool large images first as the reference MATLAB code does.

    Returns:
        SSIM in [-1, 1], 1 for identical images: float for one numpy image, ``(B,)`` array for a batch,
        tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, images smaller than the window, values outside [0, data_range], bad ``color``.
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    if kernel_size % 2 != 1 or kernel_size < 3:
        raise ValueError(f"kernel_size must be an odd integer >= 3, got {kernel_size}.")
    check_min_size(px, kernel_size, "ssim")
    val = piq.ssim(
        px.t,
        py.t,
        kernel_size=kernel_size,
        kernel_sigma=kernel_sigma,
        data_range=1.0,
        reduction="none",
        downsample=downsample,
    )
    return finish(val, px)


def ssim_gray8(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0):
    """SSIM the way the StackMFF papers report it: 8-bit grayscale via OpenCV, scikit-image defaults, range 255.

    Each image is rounded to 8 bits per channel, converted with OpenCV's ``COLOR_RGB2GRAY`` and passed to
    ``skimage.metrics.structural_similarity(reference, fused, data_range=255)`` (7x7 uniform window, sample
    covariance).

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], RGB order, at least 7x7.
        reference: ground truth, same shape.
        data_range: value of white of the inputs (1.0 for floats, 255 for 8-bit).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError, ValueError: as :func:`ssim`.
    """
    px, py = prepare_pair(fused, reference, ("fused", "reference"), data_range=data_range)
    check_min_size(px, 7, "ssim_gray8")
    f8, r8 = to_gray8(px.t), to_gray8(py.t)
    vals = [float(structural_similarity(r, f, data_range=255)) for f, r in zip(f8, r8)]
    return finish(torch.tensor(vals, dtype=torch.float64), px)
