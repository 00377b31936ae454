"""Colour conversion used by the metrics.

Grayscale is Rec.601 luma, ``Y = 0.299 R + 0.587 G + 0.114 B``: the weights of OpenCV's ``COLOR_RGB2GRAY`` /
``COLOR_BGR2GRAY``, which the StackMFF papers and the fusion-metric toolboxes use.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from stackmff.color import REC601, luma

__all__ = ["REC601", "rgb_to_gray", "to_gray8"]


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Rec.601 luma of RGB images; single-channel input is returned unchanged.

    Args:
        x: ``(..., C, H, W)`` with C = 1 or 3, RGB order.

    Returns:
        ``(..., 1, H, W)`` of the input dtype and device.
    """
    return luma(x, keepdims=True)


def to_gray8(x: torch.Tensor) -> np.ndarray:
    """8-bit grayscale exactly as an 8-bit image file read with OpenCV and converted with ``COLOR_BGR2GRAY``.

    Each channel is first rounded to 8 bits (what saving the image as an 8-bit file does), then OpenCV's
    fixed-point RGB->gray conversion is applied, so values match the StackMFF evaluation scripts bit for bit.

    Args:
        x: ``(B, C, H, W)`` tensor in [0, 1], C = 1 or 3.

    Returns:
        ``(B, H, W)`` uint8 numpy array.
    """
    u8 = np.rint(x.detach().to(torch.float64).clamp(0, 1).cpu().numpy() * 255.0).astype(np.uint8)
    if u8.shape[1] == 1:
        return u8[:, 0]
    return np.stack([cv2.cvtColor(np.ascontiguousarray(img.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY) for img in u8])
