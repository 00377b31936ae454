"""Filters shared by the metrics; all work on ``(B, C, H, W)`` tensors and follow the input's dtype and device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["gaussian_filter", "gaussian_kernel1d", "local_max", "mscn", "sobel"]


def sobel(x: torch.Tensor, *, padding: str = "zeros") -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical 3x3 Sobel responses (correlation, output size = input size).

    ``padding="zeros"`` is MATLAB's ``conv2(..., 'same')``, used by the reference Q^AB/F code (kept so values stay
    comparable); ``"replicate"`` avoids the artificial edges zero padding puts on the image border.

    Args:
        x: ``(B, C, H, W)``.
        padding: ``"zeros"`` or ``"replicate"``.

    Returns:
        ``(gx, gy)``, each ``(B, C, H, W)``: derivative along W (columns) and along H (rows).
    """
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=x.dtype, device=x.device)
    k = torch.stack([kx, kx.t()])[:, None]  # (2, 1, 3, 3)
    b, c, h, w = x.shape
    y = x.reshape(b * c, 1, h, w)
    if padding == "zeros":
        out = F.conv2d(y, k, padding=1)  # (B*C, 2, H, W)
    else:
        out = F.conv2d(F.pad(y, (1, 1, 1, 1), mode=padding), k)
    return out[:, 0].reshape(b, c, h, w), out[:, 1].reshape(b, c, h, w)


def gaussian_kernel1d(
    size: int, sigma: float, *, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Normalised 1-D Gaussian of odd ``size`` (``(size,)``)."""
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_filter(x: torch.Tensor, size: int, sigma: float, *, padding: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur with ``size`` x ``size`` support; output has the input's shape ``(B, C, H, W)``."""
    b, c, h, w = x.shape
    k = gaussian_kernel1d(size, sigma, dtype=x.dtype, device=x.device)
    p = size // 2
    y = F.pad(x.reshape(b * c, 1, h, w), (p, p, p, p), mode=padding)
    y = F.conv2d(y, k.view(1, 1, 1, size))
    y = F.conv2d(y, k.view(1, 1, size, 1))
    return y.reshape(b, c, h, w)


def local_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Maximum over the ``(2 radius + 1)^2`` neighbourhood of every pixel (borders use the pixels inside)."""
    if radius <= 0:
        return x
    k = 2 * radius + 1
    b, c, h, w = x.shape
    y = F.max_pool2d(F.pad(x.reshape(b * c, 1, h, w), (radius,) * 4, mode="replicate"), k, stride=1)
    return y.reshape(b, c, h, w)


def mscn(x: torch.Tensor, *, size: int = 7, sigma: float = 7 / 6, c: float = 1.0) -> torch.Tensor:
    """Mean-subtracted contrast-normalised coefficients (Mittal et al. 2012), the input of NIQE/PIQE/BRISQUE.

    ``(I - mu) / (sigma + c)`` with a ``size`` x ``size`` Gaussian window (replicate borders). Expects the
    0-255 scale, for which ``c = 1`` is the published constant.

    Args:
        x: ``(B, 1, H, W)`` on the 0-255 scale.

    Returns:
        ``(B, 1, H, W)``.
    """
    mu = gaussian_filter(x, size, sigma)
    var = gaussian_filter(x * x, size, sigma) - mu * mu
    return (x - mu) / (torch.sqrt(var.abs()) + c)
