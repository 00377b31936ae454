"""NIQE, the Natural Image Quality Evaluator (Mittal, Soundararajan & Bovik 2013): no-reference, opinion-unaware.

NIQE fits a multivariate Gaussian to 36 natural-scene-statistics features of sharp 96x96 patches of *pristine*
images and scores an image by the distance of its own patch-feature Gaussian to that model:

    NIQE = sqrt((mu_p - mu_d)^T pinv((S_p + S_d) / 2) (mu_p - mu_d)),  lower is better.

Features per patch and scale (two scales, the second a 2x bicubic antialiased downscale): the generalised Gaussian
fit (shape, variance) of the MSCN coefficients and the asymmetric generalised Gaussian fit (shape, mean, left and
right variance) of their products with the four neighbours (right, down, down-right, up-right), as in the paper.

**Pristine model (ours, not the authors').** The published model was fitted on 125 licensed photographs that we do
not ship or download. ``metrics/assets/niqe_pristine_skimage.npz`` was fitted by ``python -m metrics._niqe_fit``
on the ten natural photographs bundled with scikit-image (BSD: astronaut, brick, camera, chelsea, coffee, coins,
grass, gravel, moon, rocket), keeping the patches sharper than 0.75 x the sharpest, as the paper does. Scores
therefore rank images sensibly (tested: blur and noise raise them) but are **not comparable with published NIQE
numbers**; compare methods with each other only.

References:
    A. Mittal, R. Soundararajan, A. C. Bovik, "Making a 'completely blind' image quality analyzer",
    IEEE Signal Processing Letters 20(3), 2013.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ._validate import ArrayLike, finish, prepare_fused_gray
from .functional.filters import gaussian_filter

__all__ = ["PRISTINE_MODEL", "niqe", "niqe_features"]

PRISTINE_MODEL = Path(__file__).with_name("assets") / "niqe_pristine_skimage.npz"
PATCH = 96
_GAM = torch.arange(200, 10001, dtype=torch.float64) / 1000  # shape grid 0.2:0.001:10 of the reference code


@cache
def _ratio_tables() -> tuple[torch.Tensor, torch.Tensor]:
    lg = torch.lgamma
    r_ggd = torch.exp(lg(1 / _GAM) + lg(3 / _GAM) - 2 * lg(2 / _GAM))
    r_aggd = torch.exp(2 * lg(2 / _GAM) - lg(1 / _GAM) - lg(3 / _GAM))
    return r_ggd, r_aggd


def _ggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Moment-matching generalised Gaussian fit per row of ``x (P, n)`` -> shape, variance."""
    r_ggd, _ = _ratio_tables()
    var = x.pow(2).mean(1)
    rho = var / x.abs().mean(1).pow(2)
    shape = _GAM[(rho[:, None] - r_ggd[None]).abs().argmin(1)]
    return shape, var


def _aggd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric GGD fit per row of ``x (P, n)`` -> shape, mean, left variance, right variance."""
    _, r_aggd = _ratio_tables()
    neg, pos = (x < 0).to(x.dtype), (x > 0).to(x.dtype)
    left = torch.sqrt((x.pow(2) * neg).sum(1) / neg.sum(1).clamp_min(1))
    right = torch.sqrt((x.pow(2) * pos).sum(1) / pos.sum(1).clamp_min(1))
    g = left / right.clamp_min(1e-12)
    r = x.abs().mean(1).pow(2) / x.pow(2).mean(1).clamp_min(1e-12)
    rn = r * (g**3 + 1) * (g + 1) / (g**2 + 1).pow(2)
    shape = _GAM[(r_aggd[None] - rn[:, None]).pow(2).argmin(1)]
    lg = torch.lgamma
    mean = (right - left) * torch.exp(lg(2 / shape) - lg(1 / shape)) * torch.exp(0.5 * (lg(1 / shape) - lg(3 / shape)))
    return shape, mean, left.pow(2), right.pow(2)


def _patch_features(img: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``img (1, 1, H, W)`` (H, W multiples of ``size``) -> features ``(P, 18)`` and patch sharpness ``(P,)``."""
    mu = gaussian_filter(img, 7, 7 / 6)
    sigma = torch.sqrt((gaussian_filter(img * img, 7, 7 / 6) - mu * mu).abs())
    mscn = ((img - mu) / (sigma + 1))[0, 0]
    nh, nw = mscn.shape[0] // size, mscn.shape[1] // size
    blocks = mscn.reshape(nh, size, nw, size).permute(0, 2, 1, 3).reshape(-1, size, size)  # (P, s, s)
    sharp = sigma[0, 0].reshape(nh, size, nw, size).permute(0, 2, 1, 3).reshape(-1, size * size).mean(1)
    feats = list(_ggd(blocks.flatten(1)))
    for dy, dx in ((0, 1), (1, 0), (1, 1), (-1, 1)):
        # circular shift inside the patch, as MATLAB's circshift on each block
        prod = blocks * torch.roll(blocks, shifts=(dy, dx), dims=(1, 2))
        feats.extend(_aggd(prod.flatten(1)))
    return torch.stack(feats, dim=1), sharp


def niqe_features(gray255: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NIQE features of every 96x96 patch of one image.

    Args:
        gray255: ``(1, 1, H, W)`` float64 luma on the 0-255 scale, H and W at least 96 (cropped to multiples).

    Returns:
        ``(P, 36)`` features (18 per scale) and ``(P,)`` patch sharpness (mean local sigma at scale 1).
    """
    h, w = (gray255.shape[-2] // PATCH) * PATCH, (gray255.shape[-1] // PATCH) * PATCH
    img = gray255[..., :h, :w]
    f1, sharp = _patch_features(img, PATCH)
    half = F.interpolate(img, scale_factor=0.5, mode="bicubic", antialias=True, align_corners=False)
    f2, _ = _patch_features(half, PATCH // 2)
    return torch.cat([f1, f2], dim=1), sharp


@cache
def _pristine() -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(PRISTINE_MODEL) as z:
        return torch.from_numpy(z["mu"]), torch.from_numpy(z["cov"])


def _niqe(gray255: torch.Tensor) -> torch.Tensor:
    feats, _ = niqe_features(gray255)
    mu_p, cov_p = _pristine()
    mu_d = feats.mean(0)
    cov_d = torch.cov(feats.T) if feats.shape[0] > 1 else torch.zeros_like(cov_p)
    diff = (mu_p - mu_d)[None]
    return torch.sqrt((diff @ torch.linalg.pinv((cov_p + cov_d) / 2) @ diff.T).clamp_min(0))[0, 0]


def niqe(fused: ArrayLike, *, data_range: float = 1.0):
    """No-reference NIQE score (lower is better) with the bundled scikit-image pristine model; see module notes.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range], at least 96x96;
            RGB is converted to Rec.601 luma.
        data_range: value of white (1.0 for floats, 255 for 8-bit).

    Returns:
        score >= 0: float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.

    Raises:
        TypeError: input is not an array/tensor.
        ValueError: bad shape, smaller than 96x96, or values outside [0, data_range].
    """
    p, f = prepare_fused_gray(fused, data_range=data_range)
    if min(f.shape[-2:]) < PATCH:
        raise ValueError(f"niqe needs images of at least {PATCH}x{PATCH} pixels, got {f.shape[-2]}x{f.shape[-1]}.")
    return finish(torch.stack([_niqe(f[b : b + 1]) for b in range(f.shape[0])]), p)
