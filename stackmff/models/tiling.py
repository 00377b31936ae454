"""Tiling of StackMFF V3 inference: the tile plan for a memory budget and the feathered blend of tile logits.

The image is cut into overlapping tiles (reflect-padded to a multiple of 32 by the network, never resized).
:func:`plan_tiles` chooses the tile side, the overlap and the per-step chunk sizes so that the working memory stays
within ``memory_budget_mb`` (:func:`auto_memory_budget` picks the budget from the image size and the free memory).
:func:`blend_tiles` runs a per-tile logits function over the tiles and blends the tile logits with linear feathering
over the overlaps, one band of tile rows at a time, handing each band of finished rows to the caller as soon as no
later tile touches it: the memory for logits and luma is ``O(N · tile · W)``, never ``O(N · H · W)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .. import _memory
from .._checks import check_layers
from ..color import luma
from ..errors import StackMFFError
from .stackmff_v3 import StackMFFV3Config

__all__ = ["TilePlan", "auto_memory_budget", "blend_tiles", "plan_tiles"]


@dataclass(frozen=True)
class TilePlan:
    """Tile size, overlap and per-step chunk sizes chosen for a budget."""

    tile: int  # tile side in pixels (multiple of 32), >= the image when untiled
    overlap: int  # pixels shared by neighbouring tiles
    layer_group: int  # layers encoded together
    chunk_pixels: int  # full-resolution pixels per attention chunk
    tiled: bool


# Peak bytes per pixel (fp32, CPU) of one layer through the default encoder: measured 240 (RssAnon, 1024x1024,
# BN folded), rounded up for allocator slack; scaled by width for other variants (v3_small measured 120).
_ENCODER_BYTES_PER_PIXEL = 300.0


def _ceil32(x: int) -> int:
    return -(-x // 32) * 32


def plan_tiles(
    h: int,
    w: int,
    n: int,
    cfg: StackMFFV3Config,
    *,
    memory_budget_mb: float = 1024,
    tile: int | None = None,
    overlap: int | None = None,
) -> TilePlan:
    """Choose tile size and chunking so that working memory stays within ``memory_budget_mb``.

    The budget covers band buffers (luma and blended logits for one band of tile rows), the encoder of one layer
    group, the 1/4-resolution maps of all layers of a tile, and one attention chunk.
    """
    if memory_budget_mb < 64:
        raise StackMFFError(f"memory_budget_mb must be >= 64, got {memory_budget_mb}; raise the budget")
    budget = memory_budget_mb * 2**20
    e = cfg.embed_dim
    enc = _ENCODER_BYTES_PER_PIXEL * cfg.dims[0] / 32
    # attention chunk: tokens, qkv, ffn hidden and a few temporaries per layer-pixel, in bytes
    per_token = 4 * (6 * e + 3 * e + 2 * cfg.ffn_dim + 4 * cfg.attn_heads * n)
    # small chunks keep the attention working set in cache (measured: 8k pixels beats 32k-64k by ~20 % on CPU)
    chunk_pixels = int(max(1024, min(8192, 0.25 * budget / (n * per_token + 64))))
    hp, wp = _ceil32(h), _ceil32(w)

    def cost(t: int, band_w: int) -> float:
        band = 2 * n * t * band_w * 4  # luma band and blended-logits accumulator, float32
        return band + t * t * (enc + n * 4 + n * e * 4 / 16 + 16) + 0.25 * budget  # + tile logits, low-res maps

    def group(t: int, band_w: int) -> int:
        # layers encoded together: as many as the budget left after one-layer streaming allows
        spare = budget - cost(t, band_w)
        return int(max(1, min(n, 1 + spare // max(t * t * enc, 1))))

    if tile is None:
        if cost(max(hp, wp), wp) <= budget:
            t = max(hp, wp)
            return TilePlan(t, 0, group(t, wp), chunk_pixels, False)
        t = 2048
        while t > 64 and cost(t, w) > budget:
            t -= 32
        ov = overlap if overlap is not None else max(16, min(256, t // 4))
        # spread the tiles evenly: the fewest tiles of side <= t that cover the longer side with overlap ov
        side = max(h, w)
        k = max(1, math.ceil((side - ov) / max(t - ov, 1)))
        t = min(t, _ceil32(math.ceil((side + (k - 1) * ov) / k)))
    else:
        if tile < 32 or tile % 32:
            raise StackMFFError(f"tile must be a positive multiple of 32, got {tile}; e.g. tile=512")
        t = tile
        if t >= max(hp, wp):
            return TilePlan(t, 0, group(max(hp, wp), wp), chunk_pixels, False)
    ov = overlap if overlap is not None else max(16, min(256, t // 4))
    if not 0 <= ov < t // 2:
        raise StackMFFError(f"overlap must be in [0, tile/2), got {ov} for tile {t}; lower it")
    return TilePlan(t, ov, group(t, w), chunk_pixels, True)


# Working-memory budget of a tiled image when none is given. The network time of a 12 MP, 10-layer stack depends
# little on the tile once it is tiled (the overlapping tiles compute 1.64x its area at 384 MB, tile 640; 1.48x at
# 1024 MB, tile 1216: ~10 % more network time), while every MB of budget is resident memory: at 256 MB (tile 384)
# the default command on 10 x 12 MP JPEGs peaked at 1479 MB RSS (1642 MB at 384 MB; issue 16: <= 1.5 GB); with the
# decision maps kept compact and the heap given back after the network: 1406-1449 MB.
_TILED_BUDGET_MB = 256.0
# ... unless that leaves tiles smaller than this: the band buffers span the whole width for every layer (2·N·tile·W·4
# bytes), so many layers of a wide image got 64-px tiles in 256 MB (50 x 24 MP: ~10,000 tiles of which 44 % is
# overlap, > 1 h on 2 cores); the budget then grows towards the cap until the tile reaches this side
_MIN_TILE = 256


def auto_memory_budget(n: int, h: int, w: int, cfg: StackMFFV3Config, *, available_mb: float | None = None) -> float:
    """The ``memory_budget_mb`` used when none is given, from the image size and the free memory.

    At most 1/8 of the available memory, between 256 and 1024 MB. When the whole image fits untiled in that, all of
    it is used (no tile seams, no overlap to compute: stacks up to ~1 MP); otherwise :data:`_TILED_BUDGET_MB`, since
    larger tiles buy little time for the memory they hold, raised (up to that cap) while it leaves tiles under
    :data:`_MIN_TILE` px (many layers of a wide image).
    """
    avail = _memory.available_memory_mb() if available_mb is None else available_mb
    cap = max(256.0, min(1024.0, avail / 8))
    if not plan_tiles(h, w, n, cfg, memory_budget_mb=cap).tiled:
        return cap
    budget = min(cap, _TILED_BUDGET_MB)
    while budget < cap and plan_tiles(h, w, n, cfg, memory_budget_mb=budget).tile < _MIN_TILE:
        budget = min(cap, float(round(budget * 1.25)))
    return budget


def _starts(size: int, t: int, ov: int) -> list[int]:
    if size <= t:
        return [0]
    step = t - ov
    k = math.ceil((size - t) / step)
    return [min(i * step, size - t) for i in range(k)] + [size - t]


def _ramp(length: int, ov: int, lo_edge: bool, hi_edge: bool) -> np.ndarray:
    # linear feathering over the overlap; image borders keep full weight
    r = np.ones(length, np.float32)
    if ov > 0:
        ramp = (np.arange(ov, dtype=np.float32) + 1) / (ov + 1)
        if not lo_edge:
            r[:ov] = np.minimum(r[:ov], ramp)
        if not hi_edge:
            r[-ov:] = np.minimum(r[-ov:], ramp[::-1])
    return r


def blend_tiles(
    stack: np.ndarray | Sequence[np.ndarray], logits_fn: Callable[[np.ndarray], np.ndarray], plan: TilePlan
) -> Iterator[tuple[slice, np.ndarray]]:
    """Run ``logits_fn`` over feathered tiles of the stack's luma, one band of tile rows at a time.

    Only the rows of one band of tiles are read from ``stack`` at a time (a memmap or lazily decoded layers stay
    mostly unread), and the blended logits are kept only for the rows a later tile may still touch.

    Args:
        stack: ``(N, C, H, W)`` in [0, 1] or a sequence of N ``(C, H, W)`` layers.
        logits_fn: ``(N, h, w)`` luma of one tile -> ``(N, h, w)`` float logits.
        plan: the tiles (an untiled plan: one tile covering the image).

    Yields:
        ``(rows, logits)``: consecutive bands of finished rows, top to bottom, covering the image once; ``logits``
        ``(N, len(rows), W)`` float32, the feathered mean of the tile logits there.
    """
    n, _c, h, w = check_layers(stack)
    t, ov = (plan.tile, plan.overlap) if plan.tiled else (max(h, w), 0)
    ys, xs = _starts(h, t, ov), _starts(w, t, ov)
    acc = wsum = None
    acc_y0 = 0
    for iy, y0 in enumerate(ys):
        y1 = min(y0 + t, h)
        band = np.stack([luma(np.asarray(stack[k][:, y0:y1])) for k in range(n)])  # (N, bh, W)
        if acc is None:
            acc, wsum, acc_y0 = np.zeros((n, y1 - y0, w), np.float32), np.zeros((y1 - y0, w), np.float32), y0
        wy = _ramp(y1 - y0, ov, y0 == 0, y1 == h)
        for x0 in xs:
            x1 = min(x0 + t, w)
            lg = logits_fn(band[:, :, x0:x1])  # (N, bh, bw)
            wt = wy[:, None] * _ramp(x1 - x0, ov, x0 == 0, x1 == w)[None]  # (bh, bw)
            acc[:, y0 - acc_y0 : y1 - acc_y0, x0:x1] += lg * wt
            wsum[y0 - acc_y0 : y1 - acc_y0, x0:x1] += wt
        del band
        done = ys[iy + 1] if iy + 1 < len(ys) else h  # rows no later tile touches
        r = done - acc_y0
        if r > 0:  # finished rows are divided in place (never read again here): no second copy of the band
            finished = acc[:, :r]
            finished /= wsum[:r][None]
            yield slice(acc_y0, done), finished  # (N, r, W)
            del finished
        if iy + 1 < len(ys):
            ny1 = min(ys[iy + 1] + t, h)
            keep = acc[:, done - acc_y0 :]
            nacc, nw = np.zeros((n, ny1 - done, w), np.float32), np.zeros((ny1 - done, w), np.float32)
            nacc[:, : keep.shape[1]] = keep
            nw[: keep.shape[1]] = wsum[done - acc_y0 :]
            acc, wsum, acc_y0 = nacc, nw, done
