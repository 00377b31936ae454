"""Mean squared error and its root (full-reference)."""

from __future__ import annotations

import torch

from ._validate import ArrayLike, finish, prepare_reference

__all__ = ["mse", "rmse"]


def _mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of ``(B, C, H, W)`` tensors, accumulated in float64."""
    return ((x.to(torch.float64) - y.to(torch.float64)) ** 2).flatten(1).mean(dim=1)


def mse(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """Mean squared error on the [0, 1] scale (divide-out of ``data_range``: 8-bit and float inputs agree).

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range].
        reference: ground truth, same shape.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        color: ``"rgb"`` (all channels) or ``"gray"`` (Rec.601 luma).

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shapes differ, values outside [0, data_range], bad ``color``.

    Examples:
        >>> import numpy as np
        >>> mse(np.zeros((4, 4)), np.full((4, 4), 0.5))
        0.25
    """
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    return finish(_mse(px.t, py.t), px)


def rmse(fused: ArrayLike, reference: ArrayLike, *, data_range: float = 1.0, color: str = "rgb"):
    """Root mean squared error on the [0, 1] scale; arguments and returns as :func:`mse`."""
    px, py = prepare_reference(fused, reference, data_range=data_range, color=color)
    return finish(_mse(px.t, py.t).sqrt(), px)
