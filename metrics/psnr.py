"""Peak signal-to-noise ratio (full-reference), on RGB/gray floats and in the StackMFF papers' 8-bit gray convention."""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio

from ._validate import ArrayLike, finish, prepare_pair, prepare_reference
from .functional.color import to_gray8
from .mse import _mse

__all__ = ["psnr", "psnr_gray8"]


def psnr(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """PSNR in dB, ``10 log10(data_range^2 / MSE)``; ``inf`` for identical images.

    Computed in float64 without quantisation (unlike :func:`psnr_gray8`). Agrees with
    ``skimage.metrics.peak_signal_noise_ratio`` (tested); piq's ``psnr`` adds 1e-8 to the MSE and so caps at 80 dB,
    which is why it is not used here.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` (MSE over all channels) or ``"gray"`` (Rec.601 luma).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, values outside [0, data_range], bad ``color``.

    Examples:
        >>> import numpy as np
        >>> round(psnr(np.zeros((8, 8)), np.full((8, 8), 0.1)), 6)
        20.0
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    m = _mse(px.t, py.t)
    with np.errstate(divide="ignore"):
        val = torch.where(m > 0, -10.0 * torch.log10(m.clamp_min(1e-300)), torch.full_like(m, float("inf")))
    return finish(val, px)


def psnr_gray8(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0):
    """PSNR the way the StackMFF papers report it: 8-bit grayscale via OpenCV, scikit-image, ``data_range=255``.

    Each image is rounded to 8 bits per channel, converted with OpenCV's ``COLOR_RGB2GRAY`` (Rec.601, fixed point)
    and passed to ``skimage.metrics.peak_signal_noise_ratio(reference, fused, data_range=255)``.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], RGB order.
        reference: ground truth, same shape.
        data_range: value of white of the inputs (1.0 for floats, 255 for 8-bit).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input; ``inf`` if identical.

    Raises:
        TypeError, ValueError: as :func:`psnr`.
    """
    px, py = prepare_pair(fused, reference, ("fused", "reference"), data_range=data_range)
    f8, r8 = to_gray8(px.t), to_gray8(py.t)
    vals = []
    for f, r in zip(f8, r8):
        if np.array_equal(f, r):
            vals.append(float("inf"))  # skimage divides by zero here and warns
        else:
            vals.append(float(peak_signal_noise_ratio(r, f, data_range=255)))
    return finish(torch.tensor(vals, dtype=torch.float64), px)
