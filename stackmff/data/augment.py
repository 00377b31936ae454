""" "General" augmentation of synthetic focal stacks: the layer order, invalid layers and JPEG round trips.

The synthesis (:mod:`stackmff.data.synthesis`) gives stacks in focus order, every layer valid. These functions (ours)
turn a :class:`~stackmff.data.synthesis.SynthStack` into a "general" one and keep its ground truth consistent:

- :func:`shuffle_layers` permutes the layers and remaps the GT;
- :func:`inject_invalid_layers` inserts layers that must never be chosen (blurred everywhere, duplicated, noisy,
  exposure-shifted, blank; :data:`INVALID_KINDS`);
- :func:`jpeg_layers` round-trips the layers through 8-bit JPEG, as a camera or phone writes them.

The input stack is never modified; after a change of order the first of identical copies is the target
(:meth:`~stackmff.data.synthesis.SynthStack.reordered`).

Shapes: ``layers`` ``(N, 3, H, W)`` float32 in [0, 1], ``index`` ``(H, W)`` int64 in [0, N), ``aif`` ``(3, H, W)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import cv2
import numpy as np

from .._layer_stats import noise_std
from ..errors import StackMFFError
from .synthesis import SynthStack, _as_rng, disc_kernel

__all__ = ["INVALID_KINDS", "inject_invalid_layers", "jpeg_layers", "shuffle_layers"]

INVALID_KINDS = ("blurred", "duplicate", "noisy", "exposure", "blank")


def shuffle_layers(stack: SynthStack, rng: int | np.random.Generator | None = None) -> SynthStack:
    """Randomly permute the layers; ``index``, ``focus``, ``kinds`` and ``dup_of`` follow.

    Args:
        stack: the stack to permute (not modified).
        rng: random source.

    Returns:
        A new :class:`SynthStack` (duplicates re-canonicalised: the first copy is the target).
    """
    rng = _as_rng(rng)
    return stack.reordered(rng.permutation(stack.n))


def _invalid_layer(kind: str, stack: SynthStack, rng: np.random.Generator) -> np.ndarray:
    valid_ids = np.flatnonzero(stack.valid)
    src = stack.layers[int(rng.choice(valid_ids))]
    _, h, w = src.shape
    if kind == "blurred":  # defocused everywhere: the AiF behind a large disc, with the stack's noise level
        r = float(rng.uniform(2.5, max(3.0, min(h, w) / 24)))
        hwc = np.ascontiguousarray(stack.aif.transpose(1, 2, 0))
        out = cv2.filter2D(hwc, -1, disc_kernel(r), borderType=cv2.BORDER_REFLECT_101).transpose(2, 0, 1)
        # the noise of the layer it replaces (measured on it): a missed-focus frame has the sensor's noise, no more
        out = out + np.float32(noise_std(src)) * rng.standard_normal(out.shape, dtype=np.float32)
    elif kind == "noisy":
        out = src + np.float32(rng.uniform(0.06, 0.25)) * rng.standard_normal(src.shape, dtype=np.float32)
    elif kind == "exposure":
        gain = np.float32(np.exp(rng.choice([-1, 1]) * rng.uniform(0.6, 1.4)))
        out = src * gain if rng.random() < 0.6 else np.power(np.clip(src, 0, 1), np.float32(1 / gain))
        out = out + np.float32(rng.uniform(-0.15, 0.15))
    elif kind == "blank":
        level = rng.choice([0.0, 1.0, rng.uniform(0.05, 0.95)])
        colour = np.full((3, 1, 1), level, np.float32) + rng.uniform(-0.05, 0.05, (3, 1, 1)).astype(np.float32)
        out = np.broadcast_to(colour, src.shape) + np.float32(0.01) * rng.standard_normal(src.shape, dtype=np.float32)
    else:  # pragma: no cover - guarded by the caller
        raise StackMFFError(f"unknown invalid-layer kind {kind!r}; use one of {', '.join(INVALID_KINDS)}.")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def inject_invalid_layers(
    stack: SynthStack,
    rng: int | np.random.Generator | None = None,
    *,
    kinds: Sequence[str] = INVALID_KINDS,
    max_count: int = 2,
    count: int | None = None,
) -> SynthStack:
    """Insert invalid layers at random positions; they are never the GT target.

    Kinds: ``"blurred"`` (the AiF defocused everywhere by a disc of radius >= 2.5 px), ``"duplicate"`` (a bit-exact
    copy of a valid layer; the first copy in layer order is the target), ``"noisy"`` (a valid layer plus Gaussian
    noise with std 0.06-0.25), ``"exposure"`` (a valid layer with gain/gamma of exp(+-0.6..1.4) and an offset),
    ``"blank"`` (a nearly constant frame: black, white or grey).

    Args:
        stack: the stack to augment (not modified).
        rng: random source.
        kinds: kinds to draw from (uniformly).
        max_count: draw the number of invalid layers from 1..max_count (when ``count`` is None).
        count: exact number of invalid layers to insert (0 allowed).

    Returns:
        A new :class:`SynthStack` with ``N + count`` layers; ``index`` remapped to the new positions.

    Raises:
        StackMFFError: unknown kind or negative count.
    """
    rng = _as_rng(rng)
    kinds = tuple(kinds)
    for k in kinds:
        if k not in INVALID_KINDS:
            raise StackMFFError(f"unknown invalid-layer kind {k!r}; use one of {', '.join(INVALID_KINDS)}.")
    if count is None:
        if max_count < 0:
            raise StackMFFError(f"max_count must be >= 0, got {max_count}.")
        count = int(rng.integers(1, max_count + 1)) if max_count > 0 and kinds else 0
    if count < 0:
        raise StackMFFError(f"count must be >= 0, got {count}.")
    if count == 0:
        return stack
    if not kinds:
        raise StackMFFError("kinds is empty but count > 0; pass at least one invalid-layer kind.")
    n = stack.n
    new_layers, new_kinds, new_dup = [], [], []
    for _ in range(count):
        kind = kinds[int(rng.integers(len(kinds)))]
        if kind == "duplicate":
            src = int(rng.choice(np.flatnonzero(stack.valid)))
            new_layers.append(stack.layers[src].copy())
            new_dup.append(src)
        else:
            new_layers.append(_invalid_layer(kind, stack, rng))
            new_dup.append(-1)
        new_kinds.append(kind)
    grown = replace(
        stack,
        layers=np.concatenate([stack.layers, np.stack(new_layers)], axis=0),
        focus=np.concatenate([stack.focus, np.full(count, np.nan, np.float32)]),
        kinds=tuple(stack.kinds) + tuple(new_kinds),
        dup_of=np.concatenate([stack.dup_of, np.asarray(new_dup, np.int64)]),
    )
    # random insertion positions, original layers keep their relative order
    slots = np.sort(rng.choice(n + count, size=count, replace=False))
    order = np.empty(n + count, np.int64)
    is_new = np.zeros(n + count, bool)
    is_new[slots] = True
    order[is_new] = np.arange(n, n + count)
    order[~is_new] = np.arange(n)
    return grown.reordered(order)


def jpeg_layers(
    stack: SynthStack, rng: int | np.random.Generator | None = None, *, quality: tuple[int, int] = (60, 98)
) -> SynthStack:
    """Round-trip every layer through 8-bit JPEG (one random quality per stack), as a camera or phone writes them.

    The AiF target stays clean; quantisation to 8 bits comes with it. ``quality`` is an inclusive range in 1..100.

    Returns:
        A new :class:`SynthStack` (layers replaced; ground truth unchanged).
    """
    lo, hi = int(quality[0]), int(quality[1])
    if not 1 <= lo <= hi <= 100:
        raise StackMFFError(f"JPEG quality must be a range within 1..100, got {quality}.")
    q = int(_as_rng(rng).integers(lo, hi + 1))
    out = np.empty_like(stack.layers)
    for k in range(stack.n):
        u8 = np.clip(np.rint(stack.layers[k].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:  # pragma: no cover
            raise StackMFFError("OpenCV could not encode a JPEG; reinstall opencv-python-headless")
        dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        out[k] = dec.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    return replace(stack, layers=out)
