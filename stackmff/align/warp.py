"""Applying transforms: the output frame, warping every layer once, brightness matching.

- Output frame: ``crop`` keeps the largest axis-aligned rectangle every valid layer covers; ``fill`` keeps the
  reference frame and fills pixels a layer does not cover with the reference layer's pixels.
- Brightness: a per-layer, per-channel exposure gain to the consensus of the valid layers (the median of their mean
  brightness over the common frame, unclipped pixels only; defocus changes local contrast but not means).
  Offsets are kept in the transforms file for hand-edited or imported corrections and applied when present.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .estimate import _Estimate

__all__ = ["FRAMES"]

log = logging.getLogger("stackmff")

FRAMES = ("crop", "fill")
_U16 = 65535.0  # scale of the 16-bit layers a compact input of other than 8-bit layers is aligned into
# Lanczos keeps more of the fine detail fusion selects on than cubic (1-1.5 dB PSNR after fusion on synthetic stacks)
_INTERPOLATION = cv2.INTER_LANCZOS4


@dataclass
class _Warped:
    """The output layers of a stack warped by an estimate."""

    images: np.ndarray  # (N', C, H', W') float32, or a CompactStack of 8/16-bit layers for a compact input
    kept: list[int]  # input indices of the layers in ``images``
    crop: tuple[int, int, int, int]  # (x0, y0, width, height) of the output in the reference frame
    gains: np.ndarray  # (N, C) brightness gains applied
    offsets: np.ndarray  # (N, C) brightness offsets applied


def _coverage(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: reference-frame pixels whose position in the layer (``m @ x``) lies inside it.

    The layer rectangle's preimage is a convex quadrilateral (projective maps keep lines straight), so each row's
    valid pixels form one interval bounded by the four edge lines: O(H) work per layer instead of mapping every pixel.
    """
    h, w = size
    inv = np.linalg.inv(m)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1.0]]).T
    q = inv @ corners
    q = (q[:2] / q[2]).T  # (4, 2) preimage corners, in order around the quad
    ys = np.arange(h, dtype=np.float64)
    lo, hi = np.full(h, -np.inf), np.full(h, np.inf)
    centre = q.mean(0)
    eps = 1e-6
    for k in range(4):
        p0, p1 = q[k], q[(k + 1) % 4]
        # half-plane a*x + b*y + c >= 0 that contains the quad's centre
        a, b = p1[1] - p0[1], p0[0] - p1[0]
        c = -(a * p0[0] + b * p0[1])
        if a * centre[0] + b * centre[1] + c < 0:
            a, b, c = -a, -b, -c
        if abs(a) < 1e-12:
            lo[b * ys + c < -eps] = np.inf  # a horizontal edge: rows outside it are empty
            continue
        bound = -(b * ys + c) / a
        if a > 0:
            lo = np.maximum(lo, bound - eps)
        else:
            hi = np.minimum(hi, bound + eps)
    xs = np.arange(w, dtype=np.float64)
    return (xs[None, :] >= lo[:, None]) & (xs[None, :] <= hi[:, None])


def _largest_inner_rect(valid: np.ndarray) -> tuple[int, int, int, int]:
    """Greedy largest axis-aligned rectangle of True pixels: repeatedly drop the border row/column with the
    largest fraction of invalid pixels. Exact enough for the convex regions warped rectangles intersect to."""
    bad = ~valid
    y0, y1, x0, x1 = 0, valid.shape[0], 0, valid.shape[1]
    rows = bad.sum(1).astype(np.int64)  # invalid count per row within [x0, x1)
    cols = bad.sum(0).astype(np.int64)  # invalid count per column within [y0, y1)
    while y1 - y0 > 1 and x1 - x0 > 1 and rows[y0:y1].any():
        width, height = x1 - x0, y1 - y0
        cand = [
            (rows[y0] / width, "top"),
            (rows[y1 - 1] / width, "bottom"),
            (cols[x0] / height, "left"),
            (cols[x1 - 1] / height, "right"),
        ]
        _, side = max(cand)
        if side == "top":
            cols[x0:x1] -= bad[y0, x0:x1]
            y0 += 1
        elif side == "bottom":
            cols[x0:x1] -= bad[y1 - 1, x0:x1]
            y1 -= 1
        elif side == "left":
            rows[y0:y1] -= bad[y0:y1, x0]
            x0 += 1
        else:
            rows[y0:y1] -= bad[y0:y1, x1 - 1]
            x1 -= 1
    return x0, y0, x1 - x0, y1 - y0


def _warp_layers(
    images: np.ndarray, est: _Estimate, *, frame: str, drop_failed: bool, match_brightness: bool
) -> _Warped:
    """Warp every layer of ``images (N, C, H, W)`` into the reference frame (``frame``: crop or fill) and match the
    layers' brightness; a compact input gives a compact stack of 8-bit layers (8-bit sources) or 16-bit layers."""
    n, c, h, w = images.shape
    ref = est.reference
    mats = est.matrices
    kept = [i for i in range(n) if not (drop_failed and i in est.failed and i != ref)]
    trusted = [i for i in kept if i not in est.invalid] or kept
    if drop_failed and est.failed:
        log.warning(
            "dropping %d layer(s) whose alignment failed: %s", len([i for i in est.failed if i != ref]), est.failed
        )
    if frame == "crop":
        valid = np.ones((h, w), bool)
        for i in trusted:  # a distrusted layer's (maybe failed) transform never shrinks the frame
            if not np.allclose(mats[i], np.eye(3), atol=1e-9):
                valid &= _coverage(mats[i], (h, w))
        x0, y0, cw, chh = _largest_inner_rect(valid)
        if cw * chh < 0.25 * h * w:
            log.warning(
                "layers overlap on only %dx%d of %dx%d pixels; check the alignment (or use frame='fill')", cw, chh, w, h
            )
    else:
        x0, y0, cw, chh = 0, 0, w, h
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    from ..io import CompactLayer, CompactStack  # (imported here: io is not needed to align float arrays)

    # a compact (8/16-bit) input stays compact, in its own bit depth, and is warped as integers (OpenCV's Lanczos on
    # 8/16-bit pixels, saturating as the float path clips): 8-bit sources give 8-bit aligned layers, others 16-bit.
    # No float copy of a layer is made: a 12 MP layer is warped from its decoded pixels (the float path held four
    # 144 MB temporaries per layer: 1.9 GB peak for the default command on 10 x 12 MP, 1.4 GB unwarped), and the 10
    # aligned layers take 360 MB. Untouched layers come back exact; warped values are rounded to the files' own
    # bit depth, like the 8-bit result they are fused into.
    compact = isinstance(images, CompactStack)
    dtype, scale = np.uint16, _U16
    if compact and all(layer.integer_format == (np.dtype(np.uint8), 255.0) for layer in images.layers):
        dtype, scale = np.uint8, 255.0
    out = [] if compact else np.empty((len(kept), c, chh, cw), np.float32)
    lows: list[np.ndarray] = []  # low-passed copy of each output layer, for the brightness consensus
    s_low = min(1.0, 48.0 / max(chh, cw))  # ~48 px: each sample averages well beyond any defocus blur
    low_size = (max(round(cw * s_low), 4), max(round(chh * s_low), 4))

    def hwc(k: int) -> np.ndarray:  # layer k as (H, W, C): its integer pixels (compact) or float32
        if not compact:
            return np.ascontiguousarray(np.asarray(images[k]).transpose(1, 2, 0))
        layer = images.layers[k]
        if layer.integer_format == (np.dtype(dtype), scale):
            raw = layer.pixels
        else:  # another bit depth or float data: rounded into the output's
            raw = np.round(np.asarray(layer) * np.float32(scale)).astype(dtype)
        return np.ascontiguousarray(raw.transpose(1, 2, 0))  # the decoded (H, W, C) image itself: no copy

    def store(o: int, layer: np.ndarray) -> None:  # layer (H', W', C)
        planes = [layer[..., ch] for ch in range(c)]
        if compact:
            planes = [np.divide(p, np.float32(scale), dtype=np.float32) for p in planes]
        lows.append(np.stack([cv2.resize(p, low_size, interpolation=cv2.INTER_AREA) for p in planes]))
        del planes
        if compact:
            out.append(np.ascontiguousarray(layer.transpose(2, 0, 1)))
        else:
            out[o] = layer.transpose(2, 0, 1)

    ref_hwc = hwc(ref) if frame == "fill" else None
    for o, i in enumerate(kept):
        m = mats[i]
        src = hwc(i)
        if np.allclose(m, np.eye(3), atol=1e-9):
            store(o, src[y0 : y0 + chh, x0 : x0 + cw])
            continue
        mm = m @ shift
        flags = _INTERPOLATION | cv2.WARP_INVERSE_MAP
        if abs(mm[2, 0]) < 1e-12 and abs(mm[2, 1]) < 1e-12:
            warped = cv2.warpAffine(
                src, (mm[:2] / mm[2, 2]).astype(np.float64), (cw, chh), flags=flags, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            warped = cv2.warpPerspective(src, mm, (cw, chh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        del src
        warped = warped.reshape(chh, cw, c)
        if frame == "fill":
            outside = ~_coverage(m, (h, w))
            warped[outside] = ref_hwc[outside]
        if not compact:
            np.clip(warped, 0.0, 1.0, out=warped)  # Lanczos overshoots at edges (integers saturate)
        store(o, warped)
        del warped

    gains, offsets = est.gains.copy(), est.offsets.copy()
    if match_brightness and not est.skipped and np.allclose(gains, 1) and np.allclose(offsets, 0):
        gains, offsets = _match_brightness(lows, [kept.index(i) for i in trusted], kept, gains, offsets)
    for o, i in enumerate(kept):
        if not (np.allclose(gains[i], 1) and np.allclose(offsets[i], 0)):
            g, b = gains[i][:, None, None].astype(np.float32), offsets[i][:, None, None].astype(np.float32)
            if compact:
                out[o] = np.round(np.clip(out[o] / np.float32(scale) * g + b, 0, 1) * np.float32(scale)).astype(dtype)
            else:
                out[o] = np.clip(out[o] * g + b, 0, 1)
    if compact:
        out = CompactStack([CompactLayer(raw, scale, c) for raw in out])
    return _Warped(images=out, kept=kept, crop=(int(x0), int(y0), int(cw), int(chh)), gains=gains, offsets=offsets)


def _match_brightness(
    lows: list[np.ndarray], trusted: list[int], kept: list[int], gains: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fit every trusted output layer's per-channel exposure gain to the consensus of the trusted layers: the median
    over them of their mean brightness on the common frame (low-passed, pixels unclipped in every trusted layer).
    No single frame sets the brightness, an odd one is outvoted; a ratio of means because defocus keeps means but
    changes contrast. Gains within 0.5 % of 1 are left at 1; distrusted layers keep gain 1."""
    if len(trusted) < 2:
        return gains, offsets
    low = np.stack([lows[o] for o in trusted]).astype(np.float64)  # (T, C, h, w)
    for ch in range(low.shape[1]):
        x = low[:, ch]
        keep = ((x > 0.02) & (x < 0.98)).all(0)
        if keep.sum() < 16:
            continue
        means = x[:, keep].mean(1)  # (T,)
        if means.min() < 0.02:
            continue
        g = np.median(means) / means
        g[(g < 0.5) | (g > 2.0) | (np.abs(g - 1) < 0.005)] = 1.0  # larger jumps are not drift: leave those alone
        for t, o in enumerate(trusted):
            gains[kept[o], ch] = g[t]
    return gains, offsets
