"""Memory-bounded StackMFF V3 inference: luma in, per-pixel layer probabilities out, colour made from the layers.

The image is cut into overlapping tiles (reflect-padded to a multiple of 32, never resized). Inside a tile every
layer goes through the per-layer encoder on its own (``layer_group`` layers at a time), keeping only its 1/4-resolution
map; the full-resolution part (upsampling, last conv, cross-layer attention) then runs on row chunks. Tile logits
are blended with linear feathering over the overlaps, one band of tile rows at a time, so the memory for logits and
luma is ``O(N · tile · W)`` and the rest is bounded by ``memory_budget_mb`` instead of by the image size.

The colour rule (``gather``): by default the probabilities steer a Laplacian-pyramid blend of the layers
(:func:`pyramid_blend`, strip-wise, exact); ``"hard"`` copies the exact source value of the most probable layer, so 8-
and 16-bit inputs survive bit for bit; ``"soft"`` is the probability-weighted mean. Layers that must not be fused
(exposure-shifted, blank, much noisier: :func:`outlier_layers`) are dropped before the network.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..color import luma
from ..errors import StackMFFError
from ..fusion._common import lowpass_deviation, luma_hwc, noise_std
from ..fusion.registry import FusionResult
from ._weights import DEFAULT_WEIGHTS  # torch-free, re-exported here
from .stackmff_v3 import (
    StackMFFV3,
    StackMFFV3Config,
    expected_index,
    fold_batchnorm,
    remap_upstream_state_dict,
    star_index,
    to_upstream_state_dict,
    upstream_config,
)

__all__ = [
    "DEFAULT_WEIGHTS",
    "TilePlan",
    "auto_memory_budget",
    "export_upstream",
    "fuse_stack_upstream",
    "fuse_stack_v3",
    "is_upstream_state_dict",
    "load_model",
    "noise_outliers",
    "outlier_layers",
    "photometric_outliers",
    "plan_tiles",
    "predict_logits",
    "pyramid_blend",
    "resolve_device",
    "save_checkpoint",
]

log = logging.getLogger("stackmff")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        StackMFFError: an unknown device, or a CUDA device was asked for but none is available.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise StackMFFError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise StackMFFError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StackMFFError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


# ------------------------------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: str | Path, model: StackMFFV3, *, half: bool = False, **extra) -> Path:
    """Write ``{"config", "model", **extra}`` atomically (temp file + rename); ``half`` stores fp16 weights.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu() for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"config": model.cfg.to_dict(), "model": sd, **extra}, tmp)
    os.replace(tmp, path)
    return path


def load_model(
    weights: str | Path | None = None, *, device: str | torch.device | None = "cpu", head: str | None = None
) -> StackMFFV3:
    """Load a checkpoint written by :func:`save_checkpoint` or by training, or the author's upstream ``.pth``.

    Upstream checkpoints (``stackmffv3.pth``, ``stackmffv3_star.pth``, or any state dict saved by its training
    scripts, with or without DataParallel's ``module.`` prefix) are recognised by their keys; the architecture is
    read from the tensor shapes (:func:`~stackmff.models.stackmff_v3.upstream_config`). V3 and V3-star files have
    identical keys, so ``head`` ("classify" = V3, "regress" = V3-star) says which; without it a file whose name
    contains "star" is taken as V3-star, any other as V3.

    Args:
        weights: checkpoint file, or a training output folder (its ``model.pt``); ``None`` = the shipped
            :data:`DEFAULT_WEIGHTS`.
        device: where to put the model.
        head: for upstream files only: "classify" or "regress" (project checkpoints carry their own).

    Raises:
        StackMFFError: missing or unreadable file, or a state dict that is neither format.
    """
    path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if path.is_dir():  # a training output folder
        path = path / "model.pt"
    if not path.is_file():
        raise StackMFFError(
            f"weights {path} not found; pass weights=PATH (--weights) or train some with `stackmff train`"
        )
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors carry long messages; keep one line
        raise StackMFFError(f"cannot read weights {path} ({type(exc).__name__}); is it a stackmff checkpoint?") from exc
    if is_upstream_state_dict(ckpt):
        head = head or ("regress" if "star" in path.name.lower() else "classify")
        try:
            cfg = upstream_config(ckpt, head=head)
            model = StackMFFV3(cfg)
            model.load_state_dict(remap_upstream_state_dict({k: v.float() for k, v in ckpt.items()}))
        except (KeyError, ValueError, RuntimeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StackMFFError(
                f"weights {path} look like an upstream StackMFF V3 state dict but do not fit: {msg}"
            ) from None
        log.info("loaded upstream %s weights %s", "V3-star" if head == "regress" else "V3", path)
        return model.to(resolve_device(device)).eval()
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise StackMFFError(
            f"weights {path} is neither a stackmff checkpoint (needs 'config' and 'model') nor an upstream "
            "StackMFF V3 state dict; re-export it"
        )
    model = StackMFFV3(StackMFFV3Config.from_dict(ckpt["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.to(resolve_device(device)).eval()


def is_upstream_state_dict(obj) -> bool:
    """True for a plain state dict with upstream StackMFF V3 / V3-star keys (``module.`` prefix allowed)."""
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
        and any(k.removeprefix("module.").startswith("feature_extraction.encoder.") for k in obj)
    )


def export_upstream(model: StackMFFV3, path: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` as a plain fp32 state dict that the upstream ``StackMFF_V3`` (``StackMFF_V3_Star`` for a
    regression head) loads with ``load_state_dict``; atomic (temp file + rename).

    Raises:
        StackMFFError: the architecture is not expressible upstream, or ``path`` exists without ``overwrite``.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise StackMFFError(f"{path} exists; pass --overwrite to replace it")
    try:
        sd = to_upstream_state_dict(model)
    except ValueError as exc:
        raise StackMFFError(
            f"this checkpoint cannot be written for the upstream code: {exc}; only upstream-shaped variants "
            "(e.g. --model v3, v3_star) export"
        ) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(sd, tmp)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------- tiling
@dataclass(frozen=True)
class TilePlan:
    """Tile size, overlap and per-step chunk sizes chosen for a budget."""

    tile: int  # tile side in pixels (multiple of 32), >= the image when untiled
    overlap: int  # pixels shared by neighbouring tiles
    layer_group: int  # layers encoded together
    chunk_pixels: int  # full-resolution pixels per attention chunk
    tiled: bool


# Pixels per planar-attention call: its (heads, N, N, P) scores stay in cache (CPU, 1 thread: 1-2k pixels are ~30 %
# faster than 8k and 1.6x faster than 32k).
_ATTN_PIXELS = 2048

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


def available_memory_mb() -> float:
    """``MemAvailable`` of /proc/meminfo in MB (memory the kernel can give without swapping); 4096 where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4096.0


# Working-memory budget of a tiled image when none is given. The network time of a 12 MP, 10-layer stack depends
# little on the tile once it is tiled (the overlapping tiles compute 1.64x its area at 384 MB, tile 640; 1.48x at
# 1024 MB, tile 1216: ~10 % more network time), while every MB of budget is resident memory.
_TILED_BUDGET_MB = 384.0


def auto_memory_budget(n: int, h: int, w: int, cfg: StackMFFV3Config, *, available_mb: float | None = None) -> float:
    """The ``memory_budget_mb`` used when none is given, from the image size and the free memory.

    At most 1/8 of the available memory, between 256 and 1024 MB. When the whole image fits untiled in that, all of
    it is used (no tile seams, no overlap to compute: stacks up to ~1 MP); otherwise :data:`_TILED_BUDGET_MB`, since
    larger tiles buy little time for the memory they hold.
    """
    avail = available_memory_mb() if available_mb is None else available_mb
    cap = max(256.0, min(1024.0, avail / 8))
    if not plan_tiles(h, w, n, cfg, memory_budget_mb=cap).tiled:
        return cap
    return min(cap, _TILED_BUDGET_MB)


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


# ------------------------------------------------------------------------------------------------- core
def _pad_reflect(x: np.ndarray, hp: int, wp: int) -> np.ndarray:
    h, w = x.shape[-2:]
    if (h, w) == (hp, wp):
        return x
    return np.pad(x, ((0, 0), (0, hp - h), (0, wp - w)), mode="reflect" if min(h, w) > 1 else "edge")


@torch.inference_mode()
def predict_logits(
    model: StackMFFV3,
    lum: np.ndarray | torch.Tensor,
    *,
    layer_group: int | None = None,
    chunk_pixels: int = 8192,
    autocast_dtype: torch.dtype | None = None,
    half_res: bool = False,
) -> torch.Tensor:
    """Per-layer logits of one luma stack (one tile), streaming layers through the encoder.

    Args:
        model: the network (eval mode).
        lum: ``(N, H, W)`` luma in [0, 1], any H, W (reflect-padded to a multiple of 32 internally).
        layer_group: layers encoded at once (default all).
        chunk_pixels: full-resolution pixels per attention chunk.
        autocast_dtype: e.g. ``torch.bfloat16`` to run convolutions under autocast.
        half_res: run the full-resolution part (×2 instead of ×4 upsampling, last conv, cross-layer attention) at
            half resolution and upsample the logits bilinearly: ~2× less network time on CPU; on the tuning stacks
            -0.06 / -0.01 dB with the pyramid gather (the features there are bilinear upsamplings of a 1/4-resolution
            map followed by one 3×3 conv, so little is lost).

    Returns:
        ``(N, H, W)`` float32 logits on the model's device.
    """
    dev = next(model.parameters()).device
    lum = lum.detach().cpu().numpy() if isinstance(lum, torch.Tensor) else lum
    n, h, w = lum.shape
    hp, wp = _ceil32(h), _ceil32(w)
    x = torch.from_numpy(np.ascontiguousarray(_pad_reflect(lum, hp, wp), dtype=np.float32)).to(dev)  # (N, Hp, Wp)
    g = layer_group or n
    ac = torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    with ac:
        lows = [
            model.encode(x[i : i + g, None].contiguous(memory_format=torch.channels_last))  # (g, E, Hp/4, Wp/4)
            for i in range(0, n, g)
        ]
    low = torch.cat(lows).float() if len(lows) > 1 else lows[0].float()  # (N, E, Hp/4, Wp/4)
    del lows
    scale = 2 if half_res else 4
    # rows/cols of the map the attention runs on: the image itself, or (half_res) the whole padded half map
    oh, ow = (hp // 2, wp // 2) if half_res else (h, w)
    out = torch.empty(n, oh, ow, device=dev)
    rows = max(1, min(oh, chunk_pixels // (scale * low.shape[-1])))
    for r0 in range(0, oh, rows):
        r1 = min(r0 + rows, oh)
        with ac:
            feats = model.decode(low, rows=(r0, r1), scale=scale)  # (N, E, r, scale * Wp/4)
        e = feats.shape[1]
        # channel-major fp32 tokens for the planar attention (bf16 attention measured no faster on CPU in the
        # pipeline); sub-chunks small enough to stay in cache
        planar = feats[..., :ow].float().transpose(0, 1).reshape(e, n, -1)  # (E, N, r*W)
        dst = out[:, r0:r1].view(n, -1)  # (N, r*W)
        for p0 in range(0, planar.shape[2], _ATTN_PIXELS):
            dst[:, p0 : p0 + _ATTN_PIXELS] = model.interact_planar(planar[:, :, p0 : p0 + _ATTN_PIXELS])
    if half_res:
        out = F.interpolate(out[None], scale_factor=2, mode="bilinear", align_corners=False)[0, :, :h, :w]
    return out


def _as_layers(stack) -> tuple[int, int, int, int]:
    n = len(stack)
    if n < 2:
        raise StackMFFError(f"stack must have at least 2 layers, got {n}; add more focus slices")
    first = np.asarray(stack[0]) if not hasattr(stack[0], "shape") else stack[0]
    if first.ndim != 3 or first.shape[0] not in (1, 3):
        raise StackMFFError(
            f"stack layers must be (C, H, W) with C in (1, 3), got {tuple(first.shape)}; load with stackmff.io"
        )
    return n, *first.shape


def photometric_outliers(
    stack: np.ndarray | Sequence[np.ndarray], *, threshold: float = 0.05, ratio: float = 4.0
) -> np.ndarray:
    """Layers whose low-pass luma is far from the stack's per-pixel median: exposure-shifted or blank frames.

    Defocus changes fine detail, not the low-pass image, so valid layers of one scene agree at coarse scale: each
    layer is subsampled to ~64 px on its short side and Gaussian-blurred (sigma 2), and its deviation is the median
    over pixels of its absolute difference to the per-pixel median of all layers. A layer is an outlier when its
    deviation exceeds ``threshold`` and ``ratio`` times the median deviation (so a stack is never emptied, and a
    2-layer stack is never touched). Measured deviations: valid synthetic layers <= 0.009, exposure-shifted layers
    0.04-0.48 (most > 0.1), blank frames > 0.045; real stacks of ``../shared/data`` <= 0.04 (all kept).

    Args:
        stack: ``(N, C, H, W)`` array or sequence of ``(C, H, W)`` layers (only every s-th row/column is read).
        threshold: absolute deviation (luma in [0, 1]) above which a layer may be rejected.
        ratio: ... and the multiple of the median deviation it must exceed.

    Returns:
        ``(N,)`` bool, True for an outlier layer.
    """
    n = _as_layers(stack)[0]
    dev = lowpass_deviation(stack)  # (N,)
    out = (dev > threshold) & (dev > ratio * np.median(dev))
    return out if n - out.sum() >= 2 else np.zeros(n, bool)


def noise_outliers(
    stack: np.ndarray | Sequence[np.ndarray], *, threshold: float = 0.033, ratio: float = 2.5
) -> np.ndarray:
    """Layers far noisier than the rest of the stack (a frame shot at a much higher ISO, a corrupted frame).

    A layer is an outlier when its :func:`~stackmff.fusion._common.noise_std` exceeds ``threshold`` and ``ratio``
    times the stack's median, so a uniformly noisy (high-ISO) stack keeps every layer and a 2-layer stack is never
    touched. Measured (luma): every layer of every real stack in ``../shared/data`` <= 0.010; valid synthetic layers
    <= 0.026 (a sharp layer whose fine diagonal grating fills the frame: 0.026; sharp textured layers of a held-out
    procedural stack: 0.025); the "noisy" invalid layers of the synthesis (std 0.06-0.25 per channel, i.e. >= 0.040
    in luma) 0.062-0.144 on the tuning stacks, 3.4-40× their stack's median. The median is no sharper reference: in
    a stack of few layers, sharp textured layers raise it (0.020 in that procedural stack).
    Why not leave it to the network: on low-texture scenes (a rendered room) the shipped V3 picked a layer with
    noise std 0.06 on 93 % of the pixels (-18.9 dB), because there the noise is the only high frequency in the stack;
    and the pyramid gather takes the largest detail coefficients, which in a noisy layer are everywhere.
    Limit: a layer sharp on isotropic pixel-scale texture (sand, film grain) over most of the frame, in a stack whose
    other layers are all smooth, can look like a noisy frame; ``reject_outliers=False`` keeps it.

    Returns:
        ``(N,)`` bool, True for an outlier layer.
    """
    n, _c, _h, _w = _as_layers(stack)
    sig = np.array([noise_std(stack[k]) for k in range(n)])
    out = (sig > threshold) & (sig > ratio * np.median(sig))
    return out if n - out.sum() >= 2 else np.zeros(n, bool)


def outlier_layers(stack: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    """Layers that must not be fused: :func:`photometric_outliers` or :func:`noise_outliers`; ``(N,)`` bool."""
    n = _as_layers(stack)[0]
    out = photometric_outliers(stack) | noise_outliers(stack)
    return out if n - out.sum() >= 2 else np.zeros(n, bool)


def fuse_stack_v3(
    stack: np.ndarray | Sequence[np.ndarray],
    model: StackMFFV3,
    *,
    memory_budget_mb: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    reject_outliers: bool = True,
    gather: str = "pyramid",
    half_res: bool = True,
    top_k: int | None = None,
) -> FusionResult:
    """Fuse a focal stack with a StackMFF V3 model.

    Args:
        stack: ``(N, C, H, W)`` float array in [0, 1] (may be a memmap) or a sequence of N ``(C, H, W)`` layers
            that are read lazily (only row bands of each layer are touched at a time).
        model: network from :func:`load_model`; its device is used.
        memory_budget_mb: working-memory budget; decides tile size and chunking (not counting the input and the
            output arrays); ``None``: :func:`auto_memory_budget` from the image size and the free memory
            output arrays).
        tile: force a tile side (multiple of 32); default chosen from the budget.
        overlap: tile overlap in pixels (default tile/4, at most 256).
        precision: "fp32", "bf16" (encoder and full-resolution conv under autocast; the cross-layer attention
            stays fp32) or "auto": bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32. On
            held-out stacks bf16 changes PSNR by < 0.01 dB (procedural 34.698 vs 34.695, Middlebury 41.226 vs
            41.235); on CPU the encoder runs ~1.8x faster (whole fusion ~1.25x, 1 thread).
        reject_outliers: drop :func:`outlier_layers` (exposure-shifted, blank and much noisier layers) before the
            network: the network alone still picks an exposure-shifted layer on 2-10 % of the pixels of large
            images (-17 dB on Middlebury stacks) and a noisy layer in low-texture scenes; blurred and duplicated
            layers it rejects by itself.

        gather: "pyramid" (default) = :func:`pyramid_blend`, a Laplacian-pyramid blend steered by the probabilities
            (not exact source values; the best PSNR/SSIM of the three, see weights/README.md);
            "hard" = each pixel's colour is the exact source value of its most probable layer; "soft" = the
            softmax-probability-weighted mean of the layers' values (OpenFocus' default output; not exact source
            values; +0.5 dB PSNR on noisy held-out procedural stacks). The author's own code (network.py,
            predict_one_stack.py) is argmax + hard gather: ``preset="upstream"`` in the methods, see
            :func:`fuse_stack_upstream`.
            "pyramid" keeps the blended logits (2 bytes per layer-pixel) instead of a gathered image.
        half_res: the cross-layer stage at half resolution (:func:`predict_logits`; default): ~2× less network
            time on CPU for -0.04 / -0.02 dB on the held-out sets (weights/README.md); False runs the network
            exactly as trained.
        top_k: ``gather="pyramid"`` blends only each pixel's ``top_k`` most probable layers (:func:`pyramid_blend`;
            default ``None``: all). ``4`` sharpens long, unsure hand-held stacks; it costs up to ~1 dB on registered
            stacks of many layers.

    Returns:
        FusionResult with ``image`` ``(C, H, W)`` float32 (exact source values only with ``gather="hard"``),
        ``index_map`` ``(H, W)`` int32 (positions in the input stack), ``confidence`` ``(H, W)`` float32 = max
        softmax probability, ``extras`` with the tile plan and ``rejected_layers``.
    """
    n, _c, h, w = _as_layers(stack)
    if precision not in ("auto", "fp32", "bf16"):
        raise StackMFFError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    if gather not in GATHERS:
        raise StackMFFError(f"gather must be one of {', '.join(GATHERS)}, got {gather!r}")
    if gather != "hard" and model.cfg.head == "regress":
        raise StackMFFError(
            f"gather={gather!r} needs a classification head (V3); V3-star regresses depth: use gather='hard'"
        )
    dev = next(model.parameters()).device
    ac = torch.bfloat16 if precision == "bf16" or (precision == "auto" and _fast_bf16(dev)) else None
    rejected = np.flatnonzero(outlier_layers(stack)) if reject_outliers else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(n), rejected)
    if len(rejected):
        stack = [stack[int(k)] for k in keep]  # views: a memmap is still read lazily
        n = len(keep)
    model = _inference_copy(model)
    if memory_budget_mb is None:
        memory_budget_mb = auto_memory_budget(n, h, w, model.cfg)
    plan = plan_tiles(h, w, n, model.cfg, memory_budget_mb=memory_budget_mb, tile=tile, overlap=overlap)

    # On CPU one layer at a time through the encoder is fastest (its maps stay in cache: 10 × 1 MP layers encode in
    # 1.8 s one by one vs 3.6 s ten at once, 1 thread); the GPU wants the larger groups the budget allows.
    group = 1 if dev.type == "cpu" else plan.layer_group

    def logits_fn(lum: np.ndarray) -> np.ndarray:
        return (
            predict_logits(
                model, lum, layer_group=group, chunk_pixels=plan.chunk_pixels, autocast_dtype=ac, half_res=half_res
            )
            .float()
            .cpu()
            .numpy()
        )

    # "pyramid" keeps the blended logits of the whole image (fp16: 2 bytes per layer-pixel) for the blend below
    logits = np.empty((n, h, w), np.float16) if gather == "pyramid" else None
    regress = model.cfg.head == "regress"
    depth = np.empty((h, w), np.float32) if regress else None  # V3-star's normalised depth map, kept as an output
    image, index, conf = _blend_tiles(
        stack, logits_fn, plan, regress=regress, soft=gather == "soft", logits_out=logits, depth_out=depth
    )
    if logits is not None:
        image = pyramid_blend(stack, logits, top_k=top_k)
        del logits
    if len(rejected):
        index = keep.astype(np.int32)[index]  # back to positions in the input stack
    return FusionResult(
        image=image,
        index_map=index,
        confidence=conf,
        extras={
            "tile": plan.tile,
            "overlap": plan.overlap,
            "memory_budget_mb": memory_budget_mb,
            "tiled": plan.tiled,
            "device": str(dev),
            "precision": "bf16" if ac else "fp32",
            "rejected_layers": rejected.tolist(),
            "gather": gather,
            "half_res": half_res,
            **({"depth": depth} if depth is not None else {}),
        },
    )


PRESETS = ("default", "upstream")


def fuse_stack_upstream(stack: np.ndarray | Sequence[np.ndarray], model: StackMFFV3) -> FusionResult:
    """Upstream inference step by step (``predict_one_stack.py`` / ``predict_one_stack_star.py``), for comparison.

    1. the layers as 8-bit pixels (``cv2.imread``; 8-bit inputs exactly, 16-bit inputs rounded to 8 bits);
    2. grayscale with OpenCV (``COLOR_BGR2GRAY``), divided by 255;
    3. bilinear resize (``align_corners=False``) to the next multiple of 32 (a resize, not padding);
    4. the network at that resolution in fp32 (no half-resolution stage, no bf16, no tiling: memory grows with the
       image, as upstream);
    5. V3: softmax → argmax; V3-star (``head="regress"``): expected layer over k = 1..N, min-max normalised over the
       image, ``round(d · (N - 1))``;
    6. the index map resized back with nearest neighbour, the colour gathered from the original layers.

    No outlier rejection, no pyramid blend. The network runs through the same streamed code as the default path
    (BatchNorm folded, attention in row chunks), which equals upstream's forward to float rounding (logits within
    1e-5; tested against the upstream classes when ``../shared/upstream`` is present).

    Returns:
        FusionResult with exact source colours, ``index_map``, ``confidence`` (max softmax, nearest-resized), and
        ``extras``: ``"gray"`` (upstream's grayscale fused image: the gathered resized luma, bilinear-resized
        back), ``"depth"`` (V3-star only: the normalised depth map, bilinear-resized back), ``"network_seconds"``.
    """
    import time

    n, c, h, w = _as_layers(stack)
    gray = np.empty((n, h, w), np.float32)
    for k in range(n):
        u8 = np.rint(np.clip(np.asarray(stack[k][:, :, :], np.float32), 0, 1) * 255).astype(np.uint8)
        g = u8[0] if c == 1 else cv2.cvtColor(np.ascontiguousarray(u8.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        gray[k] = g.astype(np.float32) / 255.0
    hp, wp = _ceil32(h), _ceil32(w)
    x = F.interpolate(torch.from_numpy(gray)[None], size=(hp, wp), mode="bilinear", align_corners=False)[0]
    del gray
    dev = next(model.parameters()).device
    net = _inference_copy(model)
    t0 = time.perf_counter()
    lg = predict_logits(net, x.numpy(), layer_group=1 if dev.type == "cpu" else None).float().cpu()  # (N, Hp, Wp)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t0
    p = lg.softmax(0)
    depth = None
    if model.cfg.head == "regress":
        e = expected_index(lg, dim=0)
        depth = ((e - e.min()) / (e.max() - e.min()).clamp_min(torch.finfo(e.dtype).tiny)).numpy()
        idx = star_index(torch.from_numpy(depth), n).numpy()
    else:
        idx = p.argmax(0).numpy()
    fused_gray = np.take_along_axis(x.numpy(), idx[None], 0)[0]  # upstream's torch.gather on the resized luma
    index = cv2.resize(idx.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32)
    conf = cv2.resize(p.amax(0).numpy(), (w, h), interpolation=cv2.INTER_NEAREST)
    image = np.empty((c, h, w), np.float32)
    for y0 in range(0, h, 256):
        rows = slice(y0, min(y0 + 256, h))
        _gather_rows(stack, index[rows], image[:, rows], rows)
    extras = {
        "preset": "upstream",
        "gray": cv2.resize(fused_gray, (w, h)),
        "network_seconds": round(seconds, 4),
        "device": str(dev),
        "precision": "fp32",
        "rejected_layers": [],
        "gather": "hard",
        "half_res": False,
    }
    if depth is not None:
        extras["depth"] = cv2.resize(depth, (w, h))
    return FusionResult(image=image, index_map=index, confidence=conf, extras=extras)


GATHERS = ("hard", "soft", "pyramid")


def pyramid_blend(
    stack: np.ndarray | Sequence[np.ndarray],
    logits: np.ndarray,
    *,
    alpha: float = 0.5,
    beta: float = 4.0,
    window: int = 5,
    levels: int | None = None,
    strip_rows: int = 256,
    top_k: int | None = None,
) -> np.ndarray:
    """Laplacian-pyramid blend of the layers, steered by the network's per-pixel layer probabilities.

    Every layer is split into a Laplacian pyramid (Burt & Adelson). At each detail level, the weight of layer k is a
    softmax over layers of ``alpha · log G(p_k) + beta · log S_k``: ``G(p_k)`` the network's probability for layer k
    reduced to that level (Gaussian pyramid), ``S_k`` the local energy of the layer's luma coefficients in a
    ``window``² box (Burt & Kolczynski's salience). So the network decides which layers may contribute where (a
    noisy or blurred layer gets p ≈ 0 everywhere and a wrong-depth layer p ≈ 0 in that region), and within the
    layers it allows, the sharpest coefficients win, mixed smoothly across depth edges instead of cut by a per-pixel
    choice. The coarsest level is the mean of the layers.

    Memory: an online (streaming) softmax over layers keeps running sums instead of N pyramids, and the finest level
    (3/4 of a pyramid) is never held for the whole image: levels >= 1 are built from each layer's half-resolution
    Gaussian level (computed ``strip_rows`` rows at a time), then level 0 is blended and the image rebuilt strip by
    strip with a margin that makes every strip exact (the result equals the whole-image computation). Besides the
    inputs and the output image: ~1.2 float32 planes of the image (log-sum-exp, half-resolution pyramids) plus
    strips.

    ``alpha``, ``beta`` and ``window`` were chosen on tuning stacks disjoint from every validation set (procedural
    seed 555, Open3D RGB-D frames rendered with seeds 50-53): among alpha 0-1, beta 1-6 and max-selection, window
    3/5, this was the one that beat both the best classical methods on both sets.

    Limit: the probability is a prior, not a veto: with p floored at 1e-6 a layer the network rules out still wins
    where its salience is more than ~5.6× (1e-6 ** (-alpha/beta)) that of the allowed layers. A layer of strong
    noise does that everywhere, which is why :func:`fuse_stack_v3` drops :func:`outlier_layers` first; with that
    rejection off, 4 invalid layers cost 18 dB here (tuning stacks) against < 0.1 dB with it. Gating layers out
    below a fraction of the best probability recovered only 28 of those dB and cost 0.3-1.5 dB on clean stacks.

    ``top_k`` (default ``None``: every layer): only each pixel's ``top_k`` most probable layers take part. On long
    hand-held stacks the network is unsure (32-frame phone sweep ``keyboard``: mean top probability 0.24) and the
    prior alone lets many slightly misregistered layers mix: ``top_k=4`` raised its blur check (median block ratio)
    from 0.80 to 0.88. It is not the default: on registered stacks with a known all-in-focus image it loses where
    many layers are valid near a pixel (Middlebury art, N = 24: 42.58 vs 43.53 dB; the default pipeline's N = 16
    procedural stack -0.71 dB), while N = 8-10 stacks move by <= 0.04 dB (weights/README.md).

    Args:
        stack: ``(N, C, H, W)`` in [0, 1] or a sequence of N ``(C, H, W)`` layers.
        logits: ``(N, H, W)`` per-layer logits (any float dtype).
        alpha, beta: exponents of the probability and of the salience.
        window: salience box side (odd).
        levels: detail levels; default until the coarsest level is ~8 px on its short side.
        strip_rows: rows per strip of the full-resolution passes.
        top_k: keep only each pixel's ``top_k`` most probable layers: the others get probability 0 before the
            pyramid reduces it, and a layer whose reduced probability is exactly 0 gets zero weight (not the 1e-6
            floor). ``None``: all layers.

    Returns:
        ``(C, H, W)`` float32 clipped to [0, 1].
    """
    from ..fusion._common import auto_levels
    from ..fusion.laplacian_pyramid import build_laplacian_pyramid, collapse_laplacian_pyramid

    n, c, h, w = _as_layers(stack)
    if logits.shape != (n, h, w):
        raise StackMFFError(f"logits must have shape {(n, h, w)}, got {logits.shape}")
    levels = auto_levels(h, w) if levels is None else levels
    strip_rows = max(2, int(strip_rows) // 2 * 2)  # even: strips keep the pyramids' 2:1 row phase
    # log-sum-exp over layers, streamed: log p_k = logit_k - lse
    lse = np.max(logits, axis=0).astype(np.float32)
    lsum = np.zeros((h, w), np.float32)
    for k in range(n):
        lsum += np.exp(logits[k].astype(np.float32) - lse)
    lse += np.log(lsum)
    del lsum
    kth = None  # the top_k-th largest logit of every pixel: layers below it are left out
    if top_k is not None and int(top_k) < n:
        if int(top_k) < 1:
            raise StackMFFError(f"top_k must be >= 1, got {top_k}")
        kth = np.empty((h, w), np.float32)
        for r0 in range(0, h, strip_rows):
            kth[r0 : r0 + strip_rows] = np.partition(logits[:, r0 : r0 + strip_rows], n - int(top_k), axis=0)[
                n - int(top_k)
            ]

    def layer_rows(k: int, r0: int, r1: int) -> np.ndarray:  # (rows, W, C) float32
        return np.ascontiguousarray(np.asarray(stack[k][:, r0:r1], np.float32).transpose(1, 2, 0))

    def prob_rows(k: int, r0: int, r1: int) -> np.ndarray:  # (rows, W, 1)
        lk = logits[k, r0:r1].astype(np.float32)
        p = np.exp(lk - lse[r0:r1])
        if kth is not None:
            p[lk < kth[r0:r1]] = 0.0
        return p[..., None]

    exclude = kth is not None
    blend = _OnlineSoftmax(alpha, beta, window, exclude)
    # levels >= 1: the half-resolution Gaussian level of every layer and of its probability, then their pyramids
    coarse = [_OnlineSoftmax(alpha, beta, window, exclude) for _ in range(levels - 1)]
    base = None
    for k in range(n):
        g1 = _pyr_down_strips(lambda r0, r1, k=k: layer_rows(k, r0, r1), h, strip_rows)
        prob = _pyr_down_strips(lambda r0, r1, k=k: prob_rows(k, r0, r1), h, strip_rows)[..., 0]
        bands = build_laplacian_pyramid(g1[..., 0] if c == 1 else g1, levels - 1)
        del g1
        bands = [b if b.ndim == 3 else b[..., None] for b in bands]
        for lev, acc in enumerate(coarse):
            acc.add(bands[lev], prob)
            bands[lev] = None  # type: ignore[call-overload]
            prob = cv2.pyrDown(prob, borderType=cv2.BORDER_REFLECT_101)
        base = bands[-1] / np.float32(n) if base is None else base + bands[-1] / np.float32(n)
        del bands, prob
    assert base is not None
    fused = [acc.result() for acc in coarse] + [base]
    del coarse
    low = collapse_laplacian_pyramid([f[..., 0] for f in fused] if c == 1 else fused)  # the fused level 1
    low = low[..., None] if low.ndim == 2 else low
    del fused

    # level 0 and the rebuilt image, strip by strip: a margin of 16 rows covers pyrDown + pyrUp (+-4 rows) and the
    # salience box; the coarse rows for pyrUp get 2 rows of margin
    image = np.empty((c, h, w), np.float32)
    h1 = low.shape[0]
    margin = 16
    for y0 in range(0, h, strip_rows):
        y1 = min(h, y0 + strip_rows)
        a0, a1 = max(0, y0 - margin), min(h, y1 + margin)
        blend.reset()
        for k in range(n):
            x = layer_rows(k, a0, a1)
            band0 = x - cv2.pyrUp(
                cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101),
                dstsize=(w, a1 - a0),
                borderType=cv2.BORDER_REFLECT_101,
            ).reshape(x.shape)
            del x
            blend.add(band0, prob_rows(k, a0, a1)[..., 0])
            del band0
        detail = blend.result()[y0 - a0 : y1 - a0]
        b0, b1 = max(0, y0 // 2 - 2), min(h1, (y1 + 1) // 2 + 2)
        up_h = 2 * (b1 - b0) - (1 if b1 == h1 and h % 2 else 0)  # the full image's odd last row, if it is here
        up = cv2.pyrUp(low[b0:b1], dstsize=(w, up_h), borderType=cv2.BORDER_REFLECT_101).reshape(up_h, w, c)
        strip = up[y0 - 2 * b0 : y1 - 2 * b0] + detail
        np.clip(strip, 0.0, 1.0, out=strip)
        image[:, y0:y1] = strip.transpose(2, 0, 1)
    return image


class _OnlineSoftmax:
    """Running softmax-weighted sum of detail bands over layers: weight ∝ p^alpha · S^beta (see pyramid_blend)."""

    def __init__(self, alpha: float, beta: float, window: int, exclude: bool = False) -> None:
        self.alpha, self.beta, self.window = np.float32(alpha), np.float32(beta), window
        self.exclude = exclude  # probability exactly 0 -> zero weight (finite, so no inf - inf where all are out)
        self.reset()

    def reset(self) -> None:
        self.max = self.sum = self.acc = None

    def add(self, band: np.ndarray, prob: np.ndarray) -> None:
        """``band`` ``(h, w, C)`` detail coefficients of one layer, ``prob`` ``(h, w)`` its probability there."""
        lum = luma_hwc(band[..., 0] if band.shape[2] == 1 else band)
        score = cv2.boxFilter(np.square(lum), -1, (self.window, self.window), borderType=cv2.BORDER_REFLECT_101)
        score += np.float32(1e-10)
        np.log(score, out=score)
        score *= self.beta
        lp = prob + np.float32(1e-6)
        np.log(lp, out=lp)
        lp *= self.alpha
        if self.exclude:
            lp[prob <= 0] = np.float32(-1e4)
        score += lp
        del lp
        if self.max is None:
            self.max, self.sum, self.acc = score, np.ones_like(score), band.copy()
            return
        new_max = np.maximum(self.max, score)
        old = self.max
        old -= new_max
        np.exp(old, out=old)  # rescales what has been accumulated
        score -= new_max
        np.exp(score, out=score)  # this layer's unnormalised weight
        self.sum *= old
        self.sum += score
        for ch in range(band.shape[2]):
            self.acc[..., ch] *= old
            self.acc[..., ch] += score * band[..., ch]
        self.max = new_max

    def result(self) -> np.ndarray:
        out = self.acc / self.sum[..., None]
        self.reset()
        return out


def _pyr_down_strips(read_rows, h: int, strip_rows: int) -> np.ndarray:
    """``cv2.pyrDown`` of an ``(h, W, C)`` image read ``read_rows(r0, r1)`` a strip at a time; equals the whole one.

    Output row i needs input rows 2i-2..2i+2: each strip of output rows is computed from its input rows plus 4 rows
    of margin (even, so the 2:1 phase is kept), and the rows a strip border could reach are cut off.
    """
    h_out = (h + 1) // 2
    parts = []
    half = max(1, strip_rows // 2)
    for o0 in range(0, h_out, half):
        o1 = min(h_out, o0 + half)
        a0, a1 = max(0, 2 * o0 - 4), min(h, 2 * o1 + 4)
        x = read_rows(a0, a1)
        d = cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101)
        d = d.reshape(d.shape[0], d.shape[1], x.shape[2])
        parts.append(d[o0 - a0 // 2 : o1 - a0 // 2])
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _fast_bf16(dev: torch.device) -> bool:
    # bf16 by default where it is native: CUDA, or a CPU whose oneDNN has bf16 instructions (AVX512-BF16/AMX)
    if dev.type == "cuda":
        return True
    return dev.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _inference_copy(model: StackMFFV3) -> StackMFFV3:
    # BatchNorm folded into the convolutions (done once per call: a copy of a few MB, milliseconds)
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return fold_batchnorm(model)
    return model.eval()


def _blend_tiles(
    stack,
    logits_fn,
    plan: TilePlan,
    *,
    regress: bool,
    soft: bool = False,
    logits_out: np.ndarray | None = None,
    depth_out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run ``logits_fn`` ((N, h, w) luma -> (N, h, w) logits) over feathered tiles, one band of tile rows at a time.

    ``regress`` (V3-star): the index comes from :func:`~stackmff.models.stackmff_v3.star_depth` over the whole
    image (written to ``depth_out`` when given), the colour by hard gather.

    Returns:
        image ``(C, H, W)``, index ``(H, W)`` int32, confidence ``(H, W)`` float32.
    """
    n, c, h, w = _as_layers(stack)
    # with logits_out the caller makes the colour itself: no gathered image
    image = np.empty((c, h, w), np.float32) if logits_out is None else None
    index = np.empty((h, w), np.int32)
    conf = np.empty((h, w), np.float32)
    # V3-star: the expected layer of every pixel first; normalised over the whole image once all tiles are done
    depth = np.empty((h, w), np.float32) if regress else None
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
        _finalise(
            stack, acc[:, : done - acc_y0], wsum[: done - acc_y0], acc_y0, depth, image, index, conf, soft, logits_out
        )
        if iy + 1 < len(ys):
            ny1 = min(ys[iy + 1] + t, h)
            keep = acc[:, done - acc_y0 :]
            nacc, nw = np.zeros((n, ny1 - done, w), np.float32), np.zeros((ny1 - done, w), np.float32)
            nacc[:, : keep.shape[1]] = keep
            nw[: keep.shape[1]] = wsum[done - acc_y0 :]
            acc, wsum, acc_y0 = nacc, nw, done
    if depth is not None:  # upstream star head: min-max over the image, round(d * (N - 1)), hard gather
        lo, hi = float(depth.min()), float(depth.max())
        depth -= lo
        depth /= max(hi - lo, np.finfo(np.float32).tiny)
        index[:] = star_index(torch.from_numpy(depth), n).numpy()
        if image is not None:
            for y0 in range(0, h, 256):
                rows = slice(y0, min(y0 + 256, h))
                _gather_rows(stack, index[rows], image[:, rows], rows)
        if depth_out is not None:
            depth_out[:] = depth
    return image, index, conf


def _gather_rows(stack, sel: np.ndarray, out: np.ndarray, rows: slice) -> None:
    # exact source values of the selected layer, rows ``rows`` of the image
    for k in range(len(stack)):
        m = sel == k
        if m.any():
            out[:, m] = np.asarray(stack[k][:, rows])[:, m]


def _finalise(stack, acc, wsum, y0, depth, image, index, conf, soft=False, logits_out=None) -> None:
    # blended logits of finished rows -> index, confidence, gathered colour
    n, r = acc.shape[0], acc.shape[1]
    if r == 0:
        return
    lg = torch.from_numpy(acc / wsum[None])  # (N, r, W)
    if logits_out is not None:  # the caller blends the colour itself (gather="pyramid")
        logits_out[:, y0 : y0 + r] = lg.numpy()
    p = lg.softmax(0)
    rows = slice(y0, y0 + r)
    if depth is not None:  # V3-star: index and colour once the whole image's depth range is known
        depth[rows] = expected_index(lg, dim=0).numpy()
        conf[rows] = p.amax(0).numpy()
        return
    idx = p.argmax(0).to(torch.int32)
    index[rows] = idx.numpy()
    conf[rows] = p.amax(0).numpy()
    if image is None:
        return
    out = image[:, rows]
    if soft:  # probability-weighted mean of the layers
        pn = p.numpy()
        out[:] = 0
        for k in range(n):
            out += pn[k] * np.asarray(stack[k][:, rows])
        return
    _gather_rows(stack, index[rows], out, rows)
