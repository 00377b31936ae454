"""Fusion of the real stack that ships with the project (data/samples/pcb, MIT): every part of the scene must come out
as sharp as in the layer that has it in focus, which no single layer achieves.

Sharpness is the variance of the Laplacian (Pech-Pacheco et al. 2000) per 64-pixel tile, an independent measure that
none of the methods uses in this form. The reference per tile is the sharpest layer there.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stackmff.fusion import fuse
from stackmff.io import load_stack

PCB = Path(__file__).resolve().parents[3] / "data" / "samples" / "pcb"
TILE = 64


def _tile_sharpness(image: np.ndarray) -> np.ndarray:
    """Laplacian variance per TILE x TILE tile of a (C, H, W) image -> (H // TILE, W // TILE)."""
    gray = cv2.cvtColor(np.ascontiguousarray(image.transpose(1, 2, 0)), cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    h, w = (s // TILE * TILE for s in lap.shape)
    tiles = lap[:h, :w].reshape(h // TILE, TILE, w // TILE, TILE)
    return tiles.var(axis=(1, 3))


@pytest.fixture(scope="module")
def pcb() -> tuple[np.ndarray, np.ndarray]:
    """The pcb stack at half size (7, 3, 384, 512) and its per-tile best-layer sharpness."""
    images = load_stack(PCB).images
    half = np.stack(
        [
            cv2.resize(im.transpose(1, 2, 0), (im.shape[2] // 2, im.shape[1] // 2), interpolation=cv2.INTER_AREA)
            for im in images
        ]
    ).transpose(0, 3, 1, 2)
    best = np.stack([_tile_sharpness(layer) for layer in half]).max(axis=0)
    return np.ascontiguousarray(half), best


def test_no_single_layer_is_sharp_everywhere(pcb):
    stack, best = pcb
    coverage = [(_tile_sharpness(layer) >= 0.8 * best).mean() for layer in stack]
    assert max(coverage) < 0.5, coverage


@pytest.mark.parametrize("method", ["focus_measure", "laplacian_pyramid", "guided_filter", "wavelet"])
def test_fused_pcb_is_sharp_in_every_tile_without_oversharpening(pcb, method):
    stack, best = pcb
    result = fuse(stack, method=method)
    assert result.image.shape == stack.shape[1:]
    ratio = _tile_sharpness(result.image) / best
    assert (ratio >= 0.8).mean() >= 0.97, f"{method}: {np.sort(ratio)[:5]}"
    # ringing/halos would add Laplacian energy that no layer has
    assert np.percentile(ratio, 90) < 2.5, f"{method}: p90 {np.percentile(ratio, 90):.2f}"
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
