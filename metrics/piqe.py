"""PIQE, the Perception-based Image Quality Evaluator (Venkatanath et al. 2015): no-reference, parameter-free.

The luma (0-255) is normalised to MSCN coefficients (7x7 Gaussian, sigma 7/6, C = 1) and cut into 16x16 blocks
(the image is padded at the bottom/right by edge replication to a multiple of 16). A block is *active* when the
variance of its coefficients exceeds 0.1. An active block is *distorted* when any 6-pixel segment of any of its
four borders has a standard deviation below 0.1 (blockiness, flat patches), and *noisy* when
``sigma > 2 beta``, sigma the block's standard deviation and ``beta = |sigma - r| / max(sigma, r)`` with r the
ratio of the standard deviations of the two centre columns and of the other columns. Then

    PIQE = 100 (1 + sum_active [distorted (1 - v)^2 + noisy v^2]) / (1 + number of active blocks),

v the block variance. Scores lie in [0, 100]; lower is better (0-20 excellent ... 80-100 bad, per the paper).
Sample statistics use N - 1. Thresholds and block/segment sizes are the paper's; no model is fitted.

References:
    N. Venkatanath, D. Praneeth, M. C. Bh, S. S. Channappayya, S. S. Medasani, "Blind image quality evaluation
    using perception based features", National Conference on Communications (NCC), 2015.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._validate import ArrayLike, finish, prepare_fused_gray
from .functional.filters import mscn

__all__ = ["piqe"]

_BLOCK = 16
_ACTIVITY_T = 0.1
_IMPAIRED_T = 0.1
_SEGMENT = 6


def _piqe(gray: torch.Tensor) -> torch.Tensor:
    """``gray (1, 1, H, W)`` on the 0-255 scale -> scalar score."""
    h, w = gray.shape[-2:]
    ph, pw = (-h) % _BLOCK, (-w) % _BLOCK
    if ph or pw:
        gray = F.pad(gray, (0, pw, 0, ph), mode="replicate")
    m = mscn(gray)[0, 0]
    nh, nw = m.shape[0] // _BLOCK, m.shape[1] // _BLOCK
    blocks = m.reshape(nh, _BLOCK, nw, _BLOCK).permute(0, 2, 1, 3).reshape(-1, _BLOCK, _BLOCK)  # (nb, 16, 16)
    var = blocks.flatten(1).var(dim=1)
    active = var > _ACTIVITY_T
    # noticeable distortion: a low-variance 6-pixel segment on any block border
    borders = torch.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], dim=1)  # (nb, 4, 16)
    seg_std = borders.unfold(-1, _SEGMENT, 1).std(dim=-1)  # (nb, 4, 11)
    distorted = (seg_std < _IMPAIRED_T).flatten(1).any(dim=1)
    # noise: centre-surround deviation ratio against the block deviation
    c0 = _BLOCK // 2 - 1
    centre = blocks[:, :, c0 : c0 + 2].flatten(1)
    surround = torch.cat([blocks[:, :, :c0], blocks[:, :, c0 + 2 :]], dim=2).flatten(1)
    ratio = centre.std(dim=1) / surround.std(dim=1)
    ratio = torch.nan_to_num(ratio, nan=0.0)  # 0/0 -> 0 as in the reference; x/0 = inf makes beta NaN -> not noisy
    sigma = var.sqrt()
    beta = (sigma - ratio).abs() / torch.maximum(sigma, ratio)
    noisy = sigma > 2 * beta
    dist = torch.where(distorted, (1 - var) ** 2, 0 * var) + torch.where(noisy, var**2, 0 * var)
    return 100.0 * (dist[active].sum() + 1.0) / (active.sum() + 1.0)


def piqe(fused: ArrayLike, *, data_range: float = 1.0):
    """No-reference PIQE score of an image (lower is better), computed on Rec.601 luma.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 16x16.
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        score in [0, 100]: float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: input is not an array/tensor.
        ValueError: bad shape, smaller than 16x16, or values outside [0, data_range].
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    if min(f.shape[-2:]) < _BLOCK:
        raise ValueError(f"piqe needs images of at least {_BLOCK}x{_BLOCK} pixels, got {f.shape[-2]}x{f.shape[-1]}.")
    return finish(torch.stack([_piqe(f[b : b + 1]) for b in range(f.shape[0])]), p)
