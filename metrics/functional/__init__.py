"""Shared building blocks of the metrics: colour conversion and filters on ``(B, C, H, W)`` tensors."""

from .color import rgb_to_gray, to_gray8
from .filters import gaussian_filter, gaussian_kernel1d, local_max, mscn, sobel

__all__ = ["gaussian_filter", "gaussian_kernel1d", "local_max", "mscn", "rgb_to_gray", "sobel", "to_gray8"]
