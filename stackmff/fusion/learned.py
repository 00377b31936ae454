"""Fusion steered by StackMFF V3's per-pixel layer decision: outlier rejection -> network -> colour.

:func:`fuse_stack_v3` is the default path of the methods ``stackmff_v3`` and ``stackmff_v3_star``
(:mod:`stackmff.fusion.stackmff_v3`), :func:`fuse_stack_upstream` their ``preset="upstream"``.

The cut between the network and the colour: :mod:`stackmff.models` runs the network over tiles and returns the
decision (:class:`~stackmff.models.inference.LayerDecision`: index, confidence, probabilities, V3-star's depth);
this module drops the layers that must not be fused before it (:mod:`stackmff.fusion.outliers`) and makes the
colour after it. The decision is iterated band by band because every colour rule consumes each band of finished
rows while the tiles run: the probabilities of a band live only as long as the band, so no ``N × H × W`` logit
buffer is made. "pyramid" (:class:`~stackmff.fusion.pyramid_blend.PyramidBlend`) blends the finest level of the
band's strips at once and keeps only the half-resolution probabilities (float32, 1 byte per layer-pixel: half of
the fp16 logits it kept before, bitwise the same image).

This module imports torch (through :mod:`stackmff.models`); the registry adapters import it only when a learned
method runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from .._checks import check_layers
from .._memory import release_free_heap
from ..errors import StackMFFError
from ..models.device import autocast_dtype
from ..models.inference import LayerDecision, inference_copy, predict_upstream, tile_logits_fn
from ..models.stackmff_v3 import StackMFFV3
from ..models.tiling import auto_memory_budget, plan_tiles
from .outliers import outlier_layers
from .pyramid_blend import PyramidBlend
from .registry import FusionResult

__all__ = ["GATHERS", "PRESETS", "fuse_stack_upstream", "fuse_stack_v3"]

GATHERS = ("hard", "soft", "pyramid")
PRESETS = ("default", "upstream")


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
    between_tiles: Callable[[], object] | None = None,
) -> FusionResult:
    """Fuse a focal stack with a StackMFF V3 model.

    Args:
        stack: ``(N, C, H, W)`` float array in [0, 1] (may be a memmap) or a sequence of N ``(C, H, W)`` layers
            that are read lazily (only row bands of each layer are touched at a time).
        model: network from :func:`~stackmff.models.checkpoint.load_model`; its device is used.
        memory_budget_mb: working-memory budget; decides tile size and chunking (not counting the input and the
            output arrays); ``None``: :func:`~stackmff.models.tiling.auto_memory_budget` from the image size and the
            free memory.
        tile: force a tile side (multiple of 32); default chosen from the budget.
        overlap: tile overlap in pixels (default tile/4, at most 256).
        precision: "fp32", "bf16" (encoder and full-resolution conv under autocast; the cross-layer attention
            stays fp32) or "auto": bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else fp32. On
            held-out stacks bf16 changes PSNR by < 0.01 dB (procedural 34.698 vs 34.695, Middlebury 41.226 vs
            41.235); on CPU the encoder runs ~1.8x faster (whole fusion ~1.25x, 1 thread).
        reject_outliers: drop :func:`~stackmff.fusion.outliers.outlier_layers` (exposure-shifted, blank and much
            noisier layers) before the network: the network alone still picks an exposure-shifted layer on 2-10 %
            of the pixels of large images (-17 dB on Middlebury stacks) and a noisy layer in low-texture scenes;
            blurred and duplicated layers it rejects by itself.
        gather: "pyramid" (default) = :func:`~stackmff.fusion.pyramid_blend.pyramid_blend`, a Laplacian-pyramid
            blend steered by the probabilities (not exact source values; the best PSNR/SSIM of the three, see
            weights/README.md); "hard" = each pixel's colour is the exact source value of its most probable layer;
            "soft" = the softmax-probability-weighted mean of the layers' values (OpenFocus' default output; not
            exact source values; +0.5 dB PSNR on noisy held-out procedural stacks). The author's own code
            (network.py, predict_one_stack.py) is argmax + hard gather: ``preset="upstream"`` in the methods, see
            :func:`fuse_stack_upstream`. "pyramid" keeps the half-resolution probabilities (1 byte per layer-pixel)
            until the network has decided every row.
        half_res: the cross-layer stage at half resolution (:func:`~stackmff.models.inference.predict_logits`;
            default): ~2× less network time on CPU for -0.04 / -0.02 dB on the held-out sets (weights/README.md);
            False runs the network exactly as trained.
        top_k: ``gather="pyramid"`` blends only each pixel's ``top_k`` most probable layers (default ``None``:
            all). ``4`` sharpens long, unsure hand-held stacks; it costs up to ~1 dB on registered stacks of many
            layers.
        between_tiles: called before every tile's network run (e.g. :meth:`stackmff._cpu.ThreadGovernor.update`,
            which follows the free cores during a long fusion).

    Returns:
        FusionResult with ``image`` ``(C, H, W)`` float32 (exact source values only with ``gather="hard"``),
        ``index_map`` ``(H, W)`` int32 (positions in the input stack), ``confidence`` ``(H, W)`` float32 = max
        softmax probability, ``extras`` with the tile plan, ``device``, ``network_seconds`` (the tiles' network
        runs) and ``rejected_layers`` (V3-star: also ``"depth"``).

    Raises:
        StackMFFError: fewer than 2 layers, an unknown precision or gather, a gather other than "hard" with a
            V3-star model, or a tile/budget the plan refuses.
    """
    n, c, h, w = check_layers(stack)
    dev = next(model.parameters()).device
    ac = autocast_dtype(precision, dev)
    if gather not in GATHERS:
        raise StackMFFError(f"gather must be one of {', '.join(GATHERS)}, got {gather!r}")
    regress = model.cfg.head == "regress"
    if gather != "hard" and regress:
        raise StackMFFError(
            f"gather={gather!r} needs a classification head (V3); V3-star regresses depth: use gather='hard'"
        )
    rejected = np.flatnonzero(outlier_layers(stack)) if reject_outliers else np.zeros(0, np.int64)
    keep = np.setdiff1d(np.arange(n), rejected)
    if len(rejected):
        stack = [stack[int(k)] for k in keep]  # views: a memmap is still read lazily
        n = len(keep)
    net = inference_copy(model)
    if memory_budget_mb is None:
        memory_budget_mb = auto_memory_budget(n, h, w, net.cfg)
    plan = plan_tiles(h, w, n, net.cfg, memory_budget_mb=memory_budget_mb, tile=tile, overlap=overlap)
    tile_fn = tile_logits_fn(net, plan, autocast_dtype=ac, half_res=half_res)
    network_seconds = 0.0

    def logits_fn(lum: np.ndarray) -> np.ndarray:
        nonlocal network_seconds
        if between_tiles is not None:
            between_tiles()
        t0 = time.perf_counter()
        out = tile_fn(lum)
        network_seconds += time.perf_counter() - t0
        return out

    decision = LayerDecision(stack, logits_fn, plan, regress=regress)

    # every colour rule consumes each band of rows as soon as the tiles have decided it: "hard" and "soft" make its
    # colour, "pyramid" its finest level and its half-resolution probabilities (the logits in fp16, as they always
    # were for the blend; no whole-image logits are kept)
    blend = PyramidBlend(stack, top_k=top_k, dtype=np.float16) if gather == "pyramid" else None
    image = np.empty((c, h, w), np.float32) if blend is None else None
    for band in decision:
        rows = band.rows
        if blend is not None:
            blend.add(rows, band.logits)
        elif gather == "soft":  # probability-weighted mean of the layers
            out = image[:, rows]
            out[:] = 0
            for k in range(n):
                out += band.probs[k] * np.asarray(stack[k][:, rows])
        elif not regress:  # V3-star's index is known only once the whole image is decided
            _gather_rows(stack, decision.index[rows], image[:, rows], rows)
        del band  # its logits and probabilities are not kept while the next band's tiles run (peak memory)
    if regress:
        _gather_image(stack, decision.index, image)
    # the tiles' many freed band-sized arrays stay resident in the heap unless given back (130 MB on 10 x 12 MP),
    # and the coarse levels are the next peak
    release_free_heap()
    if blend is not None:
        image = blend.result()
        del blend
    # back to positions in the input stack, int32 (the decision keeps them compact while the tiles run)
    index = keep.astype(np.int32)[decision.index] if len(rejected) else decision.index.astype(np.int32)
    return FusionResult(
        image=image,
        index_map=index,
        confidence=decision.confidence.astype(np.float32),
        extras={
            "tile": plan.tile,
            "overlap": plan.overlap,
            "memory_budget_mb": memory_budget_mb,
            "tiled": plan.tiled,
            "device": str(dev),
            "network_seconds": round(network_seconds, 4),  # the tiles' network runs (the rest: colour, blend, I/O)
            "precision": "bf16" if ac else "fp32",
            "rejected_layers": rejected.tolist(),
            "gather": gather,
            "half_res": half_res,
            **({"depth": decision.depth} if decision.depth is not None else {}),
        },
    )


def fuse_stack_upstream(stack: np.ndarray | Sequence[np.ndarray], model: StackMFFV3) -> FusionResult:
    """Upstream inference step by step (``predict_one_stack.py`` / ``predict_one_stack_star.py``), for comparison.

    The decision is :func:`~stackmff.models.inference.predict_upstream` (8-bit OpenCV gray, /255, bilinear resize
    to a multiple of 32, the network in fp32, argmax or V3-star's normalised expected layer, the index resized back
    with nearest neighbour); the colour is gathered from the original layers. No outlier rejection, no pyramid
    blend.

    Returns:
        FusionResult with exact source colours, ``index_map``, ``confidence`` (max softmax, nearest-resized), and
        ``extras``: ``"gray"`` (upstream's grayscale fused image: the gathered resized luma, bilinear-resized
        back), ``"depth"`` (V3-star only: the normalised depth map, bilinear-resized back), ``"network_seconds"``.
    """
    _n, c, h, w = check_layers(stack)
    decision = predict_upstream(stack, model)
    image = _gather_image(stack, decision.index, np.empty((c, h, w), np.float32))
    extras = {
        "preset": "upstream",
        "gray": decision.gray,
        "network_seconds": round(decision.network_seconds, 4),
        "device": str(next(model.parameters()).device),
        "precision": "fp32",
        "rejected_layers": [],
        "gather": "hard",
        "half_res": False,
    }
    if decision.depth is not None:
        extras["depth"] = decision.depth
    return FusionResult(image=image, index_map=decision.index, confidence=decision.confidence, extras=extras)


def _gather_rows(stack, sel: np.ndarray, out: np.ndarray, rows: slice) -> None:
    # exact source values of the selected layer, rows ``rows`` of the image
    for k in range(len(stack)):
        m = sel == k
        if m.any():
            out[:, m] = np.asarray(stack[k][:, rows])[:, m]


def _gather_image(stack, index: np.ndarray, image: np.ndarray) -> np.ndarray:
    # exact source values of the whole image, 256 rows at a time (a lazily read stack is read a band at a time)
    h = index.shape[0]
    for y0 in range(0, h, 256):
        rows = slice(y0, min(y0 + 256, h))
        _gather_rows(stack, index[rows], image[:, rows], rows)
    return image
