"""Contact sheets of synthetic stacks for looking at them: layers, GT index map and AiF side by side."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..io import save_image
from .synthesis import SynthStack

__all__ = ["contact_sheet", "save_contact_sheet"]


def _label(tile: np.ndarray, text: str) -> np.ndarray:
    img = np.ascontiguousarray(tile)
    cv2.rectangle(img, (0, 0), (min(img.shape[1] - 1, 7 * len(text) + 4), 13), (0, 0, 0), -1)
    cv2.putText(img, text, (2, 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _fit(w: int, h: int, img: np.ndarray) -> np.ndarray:
    big = img.shape[0] > h
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if big else cv2.INTER_NEAREST)


def _index_colours(n: int) -> np.ndarray:
    hues = (np.arange(n) * 180 // max(n, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full(n, 200, np.uint8), np.full(n, 255, np.uint8)], 1)[None]
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0]


def contact_sheet(
    stacks: Sequence[SynthStack], *, max_layers: int = 8, tile: int = 128, titles: Sequence[str] = ()
) -> np.ndarray:
    """Render stacks as rows of ``max_layers`` layer tiles + GT index map (one colour per layer) + AiF.

    Tiles carry the layer position and its kind (``valid``, ``noisy``, ...); the GT map's colours match the small
    swatch drawn in each layer tile's corner.

    Args:
        stacks: the stacks to show (one row each).
        max_layers: layer tiles per row (larger stacks show their first ``max_layers``).
        tile: tile height in pixels (width follows the aspect ratio).
        titles: optional row titles drawn on the AiF tile.

    Returns:
        ``(H, W, 3)`` uint8 RGB image.
    """
    rows = []
    for r, st in enumerate(stacks):
        _, h, w = st.aif.shape
        tw = max(1, round(tile * w / h))
        colours = _index_colours(st.n)

        cells = []
        for k in range(max_layers):
            if k < st.n:
                t = _fit(tw, tile, (np.clip(st.layers[k].transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8))
                t = _label(t, f"{k} {st.kinds[k]}")
                t[-10:, -10:] = colours[k]
            else:
                t = np.full((tile, tw, 3), 32, np.uint8)
            cells.append(t)
        gt = cv2.resize(colours[st.index], (tw, tile), interpolation=cv2.INTER_NEAREST)
        cells.append(_label(gt, "GT index"))
        aif = _fit(tw, tile, (np.clip(st.aif.transpose(1, 2, 0), 0, 1) * 255 + 0.5).astype(np.uint8))
        cells.append(_label(aif, titles[r] if r < len(titles) else "AiF"))
        row = np.concatenate([np.pad(c, ((2, 2), (2, 2), (0, 0))) for c in cells], axis=1)
        rows.append(row)
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


def save_contact_sheet(path: str | os.PathLike, stacks: Sequence[SynthStack], **kwargs) -> Path:
    """Write :func:`contact_sheet` to ``path`` (PNG, atomic, overwriting)."""
    sheet = contact_sheet(stacks, **kwargs)
    return save_image(path, sheet.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0), overwrite=True)
