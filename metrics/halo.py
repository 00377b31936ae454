"""Halo / ghost measures for fused focal stacks: structure and intensity that no source supports.

Halos (bright or dark rims along depth edges) and ghosts are the main user complaint about focus stackers. They
are fusion *artefacts*: content of the fused image that is in none of the inputs. We measure two forms, both
streaming over the sources (memory linear in N), both on Rec.601 luma with replicated borders, and both exactly 0
when every fused pixel is copied from one source (a per-pixel gather) within ``radius`` pixels:

- :func:`halo`, gradient excess: the share of the fused image's gradient energy that exceeds the strongest
  source gradient in a ``(2 radius + 1)^2`` neighbourhood,
  ``sum_p max(0, gF(p) - max_i max_{q ~ p} gS_i(q))^2 / sum_p gF(p)^2`` in [0, 1]. This follows the
  fusion-artefact idea of Petrović & Xydeas (2005), who count as artefacts the fused gradients stronger than
  those of every source; the neighbourhood max tolerates the sub-pixel misregistration of real stacks.
- :func:`overshoot`, intensity overshoot: the mean distance (0-255 luma) by which the fused image leaves the
  envelope ``[min_i min_{q ~ p} S_i(q), max_i max_{q ~ p} S_i(q)]``; ringing of pyramid/wavelet fusion and
  sharpening produce it, any convex blend of sources cannot (the edge-overshoot measures used to rate
  sharpening, e.g. the overshoot of a step response).

References:
    V. Petrović, C. Xydeas, "Objective image fusion performance characterisation", ICCV 2005 (fusion artefacts
    N^{AB/F}).
"""

from __future__ import annotations

import torch

from ._validate import ArrayLike, finish, prepare_fusion
from .functional.filters import local_max, sobel

__all__ = ["halo", "overshoot"]


def _check_radius(radius: int) -> None:
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}.")


def halo(fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0, radius: int = 1):
    """Share of the fused image's gradient energy unsupported by any source (0 = no halo, 1 = all artefact).

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range]; RGB -> Rec.601 luma.
        sources: ``(N, ...)`` / ``(B, N, ...)`` array or a list of N images shaped like ``fused``.
        data_range: value of white (the score is scale-invariant; it is used for validation).
        radius: neighbourhood radius in pixels over which a source gradient can support a fused one.

    Returns:
        value in [0, 1] (0 for a constant fused image): float for one numpy image, ``(B,)`` array for a batch,
        tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shape mismatch, values outside [0, data_range], negative radius.
    """
    _check_radius(radius)
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    gx, gy = sobel(f, padding="replicate")
    g_f = torch.sqrt(gx * gx + gy * gy)
    support = torch.zeros_like(g_f)
    for i in range(s.shape[1]):
        sx, sy = sobel(s[:, i], padding="replicate")
        support = torch.maximum(support, local_max(torch.sqrt(sx * sx + sy * sy), radius))
    excess = (g_f - support).clamp_min(0).pow(2).flatten(1).sum(1)
    total = g_f.pow(2).flatten(1).sum(1)
    return finish(torch.where(total > 0, excess / torch.where(total > 0, total, torch.ones_like(total)), 0 * total), p)


def overshoot(fused: ArrayLike, sources: ArrayLike, *, data_range: float = 1.0, radius: int = 1):
    """Mean distance (0-255 luma levels) by which the fused image leaves the sources' local intensity envelope.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range]; RGB -> Rec.601 luma.
        sources: ``(N, ...)`` / ``(B, N, ...)`` array or a list of N images shaped like ``fused``.
        data_range: value of white (1.0 for floats, 255 for 8-bit).
        radius: neighbourhood radius in pixels of the envelope.

    Returns:
        value >= 0: float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shape mismatch, values outside [0, data_range], negative radius.
    """
    _check_radius(radius)
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    hi = torch.full_like(f, -float("inf"))
    lo = torch.full_like(f, float("inf"))
    for i in range(s.shape[1]):
        hi = torch.maximum(hi, local_max(s[:, i], radius))
        lo = torch.minimum(lo, -local_max(-s[:, i], radius))
    out = (f - hi).clamp_min(0) + (lo - f).clamp_min(0)
    return finish(out.flatten(1).mean(1), p)
