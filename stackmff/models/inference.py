"""Memory-bounded StackMFF V3 inference: luma in, the network's per-pixel layer decision out.

Inside a tile every layer goes through the per-layer encoder on its own (``layer_group`` layers at a time), keeping
only its 1/4-resolution map; the full-resolution part (upsampling, last conv, cross-layer attention) then runs on
row chunks (:func:`predict_logits`). :class:`LayerDecision` runs that over feathered tiles
(:func:`~stackmff.models.tiling.blend_tiles`) and turns the blended logits into the decision: per pixel the most
probable layer, its probability and, for V3-star, the normalised expected layer.

The cut between the network and the colour: this package stops at the decision and never makes a fused image
(that is :mod:`stackmff.fusion.learned`: outlier rejection, the gathers, the pyramid blend). The colour of the hard
and soft gathers is made band by band while the tiles run, so :class:`LayerDecision` is iterated: each step hands
over one band of finished rows with its logits (and, when read, probabilities: ``O(N · tile · W)``, as the tiles themselves);
no ``N × H × W`` float buffer is made here. :func:`predict_upstream` is the author's inference step by step, up to
the index map.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_layers
from .stackmff_v3 import StackMFFV3, expected_index, fold_batchnorm, star_index
from .tiling import TilePlan, _ceil32, blend_tiles

__all__ = [
    "DecisionBand",
    "LayerDecision",
    "UpstreamDecision",
    "inference_copy",
    "predict_logits",
    "predict_upstream",
    "tile_logits_fn",
]

# Pixels per planar-attention call: its (heads, N, N, P) scores stay in cache (CPU, 1 thread: 1-2k pixels are ~30 %
# faster than 8k and 1.6x faster than 32k).
_ATTN_PIXELS = 2048


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


def _first_argmax(x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """``x.argmax(0)`` (the first of tied maxima; uint8 up to 256 layers, else int16) for ``(N, ...)`` ``x`` and its
    ``top = x.amax(0)``: N comparisons of one plane each. torch's argmax over the leading axis is a strided
    reduction, 5x slower on CPU (10 x 1 MP: 160 ms vs 30 ms, 1 thread)."""
    idx = torch.zeros(x.shape[1:], dtype=torch.uint8 if x.shape[0] <= 256 else torch.int16)
    for k in range(x.shape[0] - 1, -1, -1):  # descending: the smallest k with the maximum is written last
        idx.masked_fill_(x[k] == top, k)
    return idx


def inference_copy(model: StackMFFV3, *, inplace: bool = False) -> StackMFFV3:
    """``model`` ready for inference: a copy with every BatchNorm folded into its convolution, or ``model`` in eval
    mode when it has none (the copy is a few MB; the deep copy takes ~0.1 s). ``inplace``: fold ``model`` itself
    (for a model nobody else holds, e.g. just loaded)."""
    if any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()):
        return fold_batchnorm(model, inplace=inplace)
    return model.eval()


def tile_logits_fn(
    model: StackMFFV3, plan: TilePlan, *, autocast_dtype: torch.dtype | None = None, half_res: bool = False
) -> Callable[[np.ndarray], np.ndarray]:
    """:func:`predict_logits` with the chunking of ``plan``, as the ``logits_fn`` of :func:`blend_tiles`.

    Returns:
        A function ``(N, h, w)`` luma of one tile -> ``(N, h, w)`` float32 logits on the CPU.
    """
    dev = next(model.parameters()).device
    # On CPU one layer at a time through the encoder is fastest (its maps stay in cache: 10 × 1 MP layers encode in
    # 1.8 s one by one vs 3.6 s ten at once, 1 thread); the GPU wants the larger groups the budget allows.
    group = 1 if dev.type == "cpu" else plan.layer_group

    def logits_fn(lum: np.ndarray) -> np.ndarray:
        return (
            predict_logits(
                model,
                lum,
                layer_group=group,
                chunk_pixels=plan.chunk_pixels,
                autocast_dtype=autocast_dtype,
                half_res=half_res,
            )
            .float()
            .cpu()
            .numpy()
        )

    return logits_fn


class DecisionBand:
    """One band of finished rows of a :class:`LayerDecision`.

    Attributes:
        rows: the image rows of the band.
        logits: ``(N, r, W)`` float32 blended logits.
        probs: ``(N, r, W)`` float32 softmax over the layers, computed when first read: the pyramid and hard gathers
            never read it, so a 10 x 12 MP stack's band (~46 MB) is not made beside its logits for them.
    """

    __slots__ = ("_probs", "logits", "rows")

    def __init__(self, rows: slice, logits: np.ndarray) -> None:
        self.rows, self.logits, self._probs = rows, logits, None

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            self._probs = torch.from_numpy(self.logits).softmax(0).numpy()
        return self._probs


class LayerDecision:
    """The network's per-pixel layer decision over a whole stack, computed tile by tile.

    Iterating runs the network over the tiles of ``plan`` (:func:`~stackmff.models.tiling.blend_tiles`): each step
    yields the :class:`DecisionBand` of rows no later tile touches and fills :attr:`index` and :attr:`confidence`
    there (V3), or :attr:`confidence` and the expected layer (V3-star). V3-star's :attr:`depth` is min-max
    normalised over the whole image, never a tile, so its :attr:`index` (``round(d · (N - 1))``, as upstream) is
    known only once the iteration is complete.

    Attributes:
        index: ``(H, W)`` the chosen layer (argmax of the probabilities; V3-star: from the depth), uint8 when
            N <= 256 (else int16): 1/4 of an int32 map (36 MB less on 12 MP) while the tiles run.
        confidence: ``(H, W)`` float16 the largest softmax probability (within 5e-4; 24 MB less on 12 MP).
        depth: ``(H, W)`` float32 V3-star's normalised expected layer in [0, 1]; ``None`` for V3.

    Args:
        stack: ``(N, C, H, W)`` in [0, 1] or a sequence of N ``(C, H, W)`` layers (read a band of rows at a time).
        logits_fn: ``(N, h, w)`` luma of one tile -> ``(N, h, w)`` logits (:func:`tile_logits_fn`).
        plan: the tiles.
        regress: V3-star's head (``model.cfg.head == "regress"``).
    """

    def __init__(
        self,
        stack: np.ndarray | Sequence[np.ndarray],
        logits_fn: Callable[[np.ndarray], np.ndarray],
        plan: TilePlan,
        *,
        regress: bool = False,
    ) -> None:
        self.n, _c, h, w = check_layers(stack)
        self._stack, self._logits_fn, self._plan = stack, logits_fn, plan
        self.index = np.empty((h, w), np.uint8 if self.n <= 256 else np.int16)
        self.confidence = np.empty((h, w), np.float16)
        self.depth = np.empty((h, w), np.float32) if regress else None

    def __iter__(self) -> Iterator[DecisionBand]:
        for rows, logits in blend_tiles(self._stack, self._logits_fn, self._plan):
            lg = torch.from_numpy(logits)  # (N, r, W)
            # the largest probability is 1 / sum_k exp(l_k - max l), the most probable layer the largest logit:
            # one (r, W) plane at a time instead of the band's (N, r, W) softmax
            top = lg.amax(0)
            total = torch.zeros_like(top)
            for k in range(lg.shape[0]):
                total += torch.exp(lg[k] - top)
            self.confidence[rows] = total.reciprocal_().numpy()
            del total
            if self.depth is not None:  # V3-star: the index once the whole image's depth range is known
                self.depth[rows] = expected_index(lg, dim=0).numpy()
            else:
                self.index[rows] = _first_argmax(lg, top).numpy()
            yield DecisionBand(rows, logits)
            del lg, logits, top  # before the next band's tiles run: one band's logits at a time
        if self.depth is not None:  # upstream star head: min-max over the image, round(d * (N - 1))
            depth = self.depth
            lo, hi = float(depth.min()), float(depth.max())
            depth -= lo
            depth /= max(hi - lo, np.finfo(np.float32).tiny)
            self.index[:] = star_index(torch.from_numpy(depth), self.n).numpy()


@dataclass
class UpstreamDecision:
    """The decision of :func:`predict_upstream`, at the input's resolution.

    Attributes:
        index: ``(H, W)`` int32 the chosen layer (nearest-resized).
        confidence: ``(H, W)`` float32 the largest softmax probability (nearest-resized).
        gray: ``(H, W)`` float32 upstream's grayscale fused image: the network's resized luma input gathered by the
            index, bilinear-resized back.
        depth: ``(H, W)`` float32 V3-star's normalised depth map (bilinear-resized back); ``None`` for V3.
        network_seconds: time spent in the network.
    """

    index: np.ndarray
    confidence: np.ndarray
    gray: np.ndarray
    depth: np.ndarray | None
    network_seconds: float


def predict_upstream(stack: np.ndarray | Sequence[np.ndarray], model: StackMFFV3) -> UpstreamDecision:
    """Upstream inference step by step (``predict_one_stack.py`` / ``predict_one_stack_star.py``) up to the index.

    1. the layers as 8-bit pixels (``cv2.imread``; 8-bit inputs exactly, 16-bit inputs rounded to 8 bits);
    2. grayscale with OpenCV (``COLOR_BGR2GRAY``), divided by 255;
    3. bilinear resize (``align_corners=False``) to the next multiple of 32 (a resize, not padding);
    4. the network at that resolution in fp32 (no half-resolution stage, no bf16, no tiling: memory grows with the
       image, as upstream);
    5. V3: softmax → argmax; V3-star (``head="regress"``): expected layer over k = 1..N, min-max normalised over the
       image, ``round(d · (N - 1))``;
    6. the index map resized back with nearest neighbour.

    The network runs through the same streamed code as the default path (BatchNorm folded, attention in row
    chunks), which equals upstream's forward to float rounding (logits within 1e-5; tested against the upstream
    classes when ``../shared/upstream`` is present). The colour (gathered from the original layers) is
    :func:`stackmff.fusion.learned.fuse_stack_upstream`'s.
    """
    n, c, h, w = check_layers(stack)
    gray = np.empty((n, h, w), np.float32)
    for k in range(n):
        u8 = np.rint(np.clip(np.asarray(stack[k][:, :, :], np.float32), 0, 1) * 255).astype(np.uint8)
        g = u8[0] if c == 1 else cv2.cvtColor(np.ascontiguousarray(u8.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
        gray[k] = g.astype(np.float32) / 255.0
    hp, wp = _ceil32(h), _ceil32(w)
    x = F.interpolate(torch.from_numpy(gray)[None], size=(hp, wp), mode="bilinear", align_corners=False)[0]
    del gray
    dev = next(model.parameters()).device
    net = inference_copy(model)
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
    return UpstreamDecision(
        index=cv2.resize(idx.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST).astype(np.int32),
        confidence=cv2.resize(p.amax(0).numpy(), (w, h), interpolation=cv2.INTER_NEAREST),
        gray=cv2.resize(fused_gray, (w, h)),
        depth=cv2.resize(depth, (w, h)) if depth is not None else None,
        network_seconds=seconds,
    )
