"""No-reference blur check per block: is every textured block of the fused image as sharp as its sharpest layer?

A fused focal stack should, at every place, be as sharp as the sharpest (aligned) source layer there, and no
sharper. Without a ground truth we compare, block by block, the fused image against its own sources:

- **sharpness ratio** ``r_b = E_F(b) / max_i E_{S_i}(b)``, with ``E(b)`` the detail energy of block ``b``: the mean
  squared 3x3 Laplacian of the Rec.601 luma (0-255 scale, replicated borders). A second derivative, not the
  gradient: the broad ramps that a defocused bright object spreads over a dark background have large gradients but
  almost no Laplacian, so they do not make a blurred layer look like the sharpest one (with Sobel energy they did,
  on the pcb stack). ``r_b ~ 1``: the block was taken from its sharpest layer; ``r_b << 1``: a blurred pick (a
  wrong layer, or a blend of sharp and defocused layers); ``r_b > 1``: more detail than any layer has there.
- **unsupported edge share** ``u_b``: the share of the fused block's gradient energy that exceeds the strongest
  source gradient within ``radius`` pixels (the per-block form of :func:`metrics.halo`): edges that no layer has
  at that place — halos (ringing rims) and ghosts (edges of a misregistered layer). 0 for any per-pixel gather.

Only **textured** blocks count: those whose sharpest layer has an RMS Laplacian of at least ``min_detail`` (0-255
luma; flat blocks, where all layers look alike and the ratio is noise over noise, are left out). Summary
numbers: :func:`sharpness_ratio` (median ``r_b``), :func:`blurred_share` (share of textured blocks with
``r_b < below``, default 0.4) and :func:`ghost_share` (share with extra edges: ``r_b > 1.5`` or ``u_b > 0.2``);
:func:`block_sharpness` returns the maps for crops and plots.

Limits: the sources must be registered to the fused image (pass the aligned layers); a residual shift of a few
pixels changes ``E`` little (it is a block mean) but makes ``u_b`` count the shifted edges, so compare methods on the
same aligned layers. A fused image resampled onto the sources (``stackmff evaluate``'s ``on_size_mismatch=
"register"`` for results cropped by alignment) loses gradient energy in the bilinear warp (ratios ~0.8 for every
method on the downscaled samples): compare methods there, not absolute values. A method that denoises flat-ish
blocks scores a ratio below 1 there (noise energy removed): ``min_detail`` keeps blocks whose detail is mostly
noise out. A block that spans several focus depths can rightly exceed 1 (its parts are sharp in different layers, so
no single layer has all its detail): seen on the 170x116 EPFL microscope stack, where 32-px blocks are a fifth of
the image; use smaller blocks on small images before reading ``r_b > 1.5`` as a halo.

Grain or blur: the finest scale of a photograph is mostly sensor noise, film/JPEG grain and demosaicing texture, so a
method that averages several equally sharp layers (denoising) scores below 1 there while every object stays as sharp.
``scale=2`` (or 4) measures the same blocks on the images reduced by a Gaussian pyramid: object-scale detail without
the finest octave. A blurred pick stays far below 1 at every scale; noise averaged away recovers at ``scale=2``
(the 32-frame phone stack ``keyboard``: V3's median 0.81 at full resolution, 0.97 at half).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._validate import ArrayLike, finish, prepare_fusion
from .functional.filters import local_max, sobel

__all__ = ["BlockSharpness", "block_sharpness", "blurred_share", "ghost_share", "sharpness_ratio"]


@dataclass
class BlockSharpness:
    """Per-block maps of :func:`block_sharpness`, ``(B, H // block, W // block)`` float64 tensors.

    Attributes:
        ratio: fused block's detail (Laplacian) energy over the sharpest layer's there.
        unsupported: share of the fused block's gradient energy no source supports (0 when the block has none).
        source_rms: RMS Laplacian of the sharpest layer in the block (0-255 luma).
        best_layer: ``(B, Hb, Wb)`` int64, index of the sharpest layer per block.
        textured: ``(B, Hb, Wb)`` bool, blocks with ``source_rms >= min_detail``.
        block: block side in pixels.
    """

    ratio: torch.Tensor
    unsupported: torch.Tensor
    source_rms: torch.Tensor
    best_layer: torch.Tensor
    textured: torch.Tensor
    block: int

    def median_ratio(self) -> torch.Tensor:
        """``(B,)`` median ratio over textured blocks (NaN for an image without any)."""
        return _per_image(self.ratio, self.textured, lambda v: v.median())

    def share_below(self, below: float = 0.4) -> torch.Tensor:
        """``(B,)`` share of textured blocks whose ratio is below ``below``."""
        return _per_image(self.ratio, self.textured, lambda v: (v < below).double().mean())

    def share_extra(self, above: float = 1.5, max_unsupported: float = 0.2) -> torch.Tensor:
        """``(B,)`` share of textured blocks with extra edges: ratio above ``above`` or unsupported edge share above
        ``max_unsupported``."""
        extra = (self.ratio > above) | (self.unsupported > max_unsupported)
        return _per_image(extra.double(), self.textured, lambda v: v.mean())

    def summary(self, index: int = 0) -> dict[str, float]:
        """The summary numbers of image ``index``: median ratio, blurred share, ghost share, textured blocks."""
        return {
            "median_ratio": float(self.median_ratio()[index]),
            "blurred_share": float(self.share_below()[index]),
            "ghost_share": float(self.share_extra()[index]),
            "textured_blocks": int(self.textured[index].sum()),
        }


def _per_image(values: torch.Tensor, mask: torch.Tensor, fn) -> torch.Tensor:
    out = torch.full((values.shape[0],), float("nan"), dtype=torch.float64)
    for i in range(values.shape[0]):
        v = values[i][mask[i]]
        if v.numel():
            out[i] = fn(v)
    return out


def _check(block: int, min_detail: float, radius: int) -> None:
    if not isinstance(block, int) or isinstance(block, bool) or block < 4:
        raise ValueError(f"block must be an integer >= 4, got {block!r}.")
    if not isinstance(min_detail, (int, float)) or isinstance(min_detail, bool) or not min_detail >= 0:
        raise ValueError(f"min_detail must be a number >= 0, got {min_detail!r}.")
    if not isinstance(radius, int) or isinstance(radius, bool) or radius < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}.")


def _check_scale(scale: int, block: int) -> None:
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1 or scale & (scale - 1):
        raise ValueError(f"scale must be a power of 2 (1, 2, 4, ...), got {scale!r}.")
    if block // scale < 4:
        raise ValueError(f"block {block} at scale {scale} leaves blocks under 4 px; use block >= {4 * scale}.")


def _reduce(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``(B, 1, H, W)`` reduced ``scale`` times (a power of 2) by Gaussian pyramid steps: 5-tap binomial, every
    other pixel (Burt & Adelson's REDUCE, as ``cv2.pyrDown``), reflected borders."""
    k = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], dtype=x.dtype, device=x.device) / 16
    while scale > 1:
        y = F.pad(x, (2, 2, 2, 2), mode="reflect")
        y = F.conv2d(y, k.view(1, 1, 1, 5))
        x = F.conv2d(y, k.view(1, 1, 5, 1))[..., ::2, ::2]
        scale //= 2
    return x


def _blocks(f: torch.Tensor, s: torch.Tensor, block: int, min_detail: float, radius: int, scale: int = 1):
    side = block  # in the input's pixels: the maps index the same blocks at every scale
    if scale > 1:  # the same blocks of the image, measured on its reduced copies
        f = _reduce(f, scale)
        s = torch.stack([_reduce(s[:, i], scale) for i in range(s.shape[1])], dim=1)
        block //= scale
    h, w = f.shape[-2:]
    if h < block or w < block:
        raise ValueError(f"fused must be at least one block ({block}x{block} pixels), got {h}x{w}; lower block.")

    def grad(x: torch.Tensor) -> torch.Tensor:  # (B, 1, H, W) Sobel magnitude
        gx, gy = sobel(x, padding="replicate")
        return torch.sqrt(gx * gx + gy * gy)

    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=f.dtype, device=f.device)

    def energy(x: torch.Tensor) -> torch.Tensor:  # (B, Hb, Wb) mean squared Laplacian per whole block
        d = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), lap.view(1, 1, 3, 3))
        return F.avg_pool2d(d * d, block, stride=block)[:, 0]

    g_f = grad(f)
    best = support = None
    best_idx = None
    for i in range(s.shape[1]):  # one source at a time: memory linear in one layer
        g_s = grad(s[:, i])
        e = energy(s[:, i])
        if best is None:
            best, best_idx = e, torch.zeros_like(e, dtype=torch.int64)
            support = local_max(g_s, radius)
        else:
            best_idx = torch.where(e > best, torch.full_like(best_idx, i), best_idx)
            best = torch.maximum(best, e)
            support = torch.maximum(support, local_max(g_s, radius))
    e_f = energy(f)
    excess = F.avg_pool2d((g_f - support).clamp_min(0).pow(2), block, stride=block)[:, 0]
    tiny = torch.finfo(e_f.dtype).tiny
    ratio = e_f / best.clamp_min(tiny)
    unsupported = torch.where(e_f > 0, excess / e_f.clamp_min(tiny), torch.zeros_like(e_f))
    rms = best.sqrt()
    return BlockSharpness(ratio, unsupported, rms, best_idx, rms >= min_detail, side)


def block_sharpness(
    fused: ArrayLike,
    sources: ArrayLike,
    *,
    data_range: float = 1.0,
    block: int = 32,
    min_detail: float = 12.0,
    radius: int = 1,
    scale: int = 1,
) -> BlockSharpness:
    """Per-block sharpness of the fused image against its sharpest source layer, and its unsupported edges.

    Args:
        fused: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` image(s) in [0, data_range]; RGB -> Rec.601 luma.
        sources: the registered layers, ``(N, ...)`` / ``(B, N, ...)`` array or a list of N images like ``fused``.
        data_range: value of white (1.0 for floats, 255 for 8-bit, 65535 for 16-bit).
        block: block side in pixels; the last partial row/column of blocks is left out.
        min_detail: a block is textured when its sharpest layer's RMS Laplacian (0-255 luma) is at least this.
            12 is ~2.7x that of JPEG-level noise (noise of std 1 level gives 4.5).
        radius: neighbourhood radius (pixels) over which a source gradient supports a fused one.
        scale: measure on the images reduced this many times (a power of 2; Gaussian pyramid): 2 leaves out the
            finest octave (grain, sensor noise), see the module notes. ``block`` stays in the input's pixels;
            ``min_detail`` and ``radius`` apply at the reduced scale.

    Returns:
        :class:`BlockSharpness` (tensors on the CPU/device of the input, float64).

    Raises:
        TypeError: inputs are not arrays/tensors.
        ValueError: shape mismatch, values outside [0, data_range], an image smaller than one block, bad options.

    Examples:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> sharp = rng.random((64, 64))
        >>> flat = np.full((64, 64), 0.5)
        >>> bs = block_sharpness(sharp, [flat, sharp])
        >>> tuple(bs.ratio.shape), float(bs.median_ratio()[0]), int(bs.best_layer[0, 0, 0])
        ((1, 2, 2), 1.0, 1)
    """
    _check(block, min_detail, radius)
    _check_scale(scale, block)
    _p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    return _blocks(f, s, block, float(min_detail), radius, scale)


def sharpness_ratio(
    fused: ArrayLike,
    sources: ArrayLike,
    *,
    data_range: float = 1.0,
    block: int = 32,
    min_detail: float = 12.0,
    radius: int = 1,
    scale: int = 1,
):
    """Median over textured blocks of the fused block's detail energy over its sharpest layer's (~1 = sharp).

    See :func:`block_sharpness` for the arguments (``scale=2``: without the finest octave's grain and noise). Returns NaN for an image without textured blocks.

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.
    """
    _check(block, min_detail, radius)
    _check_scale(scale, block)
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    return finish(_blocks(f, s, block, float(min_detail), radius, scale).median_ratio(), p)


def blurred_share(
    fused: ArrayLike,
    sources: ArrayLike,
    *,
    data_range: float = 1.0,
    block: int = 32,
    min_detail: float = 12.0,
    below: float = 0.4,
):
    """Share of textured blocks whose sharpness ratio is below ``below`` (blurred picks); 0 = none, in [0, 1].

    See :func:`block_sharpness` for the other arguments. Returns NaN for an image without textured blocks.

    Returns:
        float for one numpy image, ``(B,)`` array for a batch, tensor for torch input.
    """
    _check(block, min_detail, 1)
    if not isinstance(below, (int, float)) or isinstance(below, bool) or not below > 0:
        raise ValueError(f"below must be a positive number, got {below!r}.")
    p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    return finish(_blocks(f, s, block, float(min_detail), 1).share_below(float(below)), p)


def ghost_share(
    fused: ArrayLike,
    sources: ArrayLike,
    *,
    data_range: float = 1.0,
    block: int = 32,
    min_detail: float = 12.0,
    radius: int = 1,
    above: float = 1.5,
    max_unsupported: float = 0.2,
):
    """Share of textured blocks with extra edges: halos (ringing rims) or ghosts (a misregistered layer's edges).

    A block has extra edges when its detail energy exceeds ``above`` times its sharpest layer's (ringing and
    sharpening raise every edge) or when more than ``max_unsupported`` of it lies where no layer has an edge within
    ``radius`` pixels (a ghost's displaced edges). See :func:`block_sharpness` for the other arguments. Returns NaN
    for an image without textured blocks.

    Returns:
        float in [0, 1] for one numpy image, ``(B,)`` array for a batch, tensor for torch input.
    """
    _check(block, min_detail, radius)
    if not isinstance(above, (int, float)) or isinstance(above, bool) or not above > 1:
        raise ValueError(f"above must be a number > 1, got {above!r}.")
    if not isinstance(max_unsupported, (int, float)) or isinstance(max_unsupported, bool):
        raise ValueError(f"max_unsupported must be a number in [0, 1), got {max_unsupported!r}.")
    if not 0 <= max_unsupported < 1:
        raise ValueError(f"max_unsupported must be a number in [0, 1), got {max_unsupported!r}.")
    _p, f, s = prepare_fusion(fused, sources, data_range=data_range)
    bs = _blocks(f, s, block, float(min_detail), radius)
    return finish(bs.share_extra(float(above), float(max_unsupported)), _p)
