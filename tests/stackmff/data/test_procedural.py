"""Tests for the procedural RGB-D scene generator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stackmff.data.procedural import make_scene
from stackmff.errors import StackMFFError


@pytest.mark.parametrize(("h", "w"), [(8, 8), (40, 64), (96, 72)])
def test_make_scene_shapes_and_ranges(h, w):
    s = make_scene(1, h, w)
    assert s.image.shape == (3, h, w) and s.image.dtype == np.float32
    assert s.disparity.shape == (h, w) and s.disparity.dtype == np.float32
    assert 0.0 <= s.image.min() and s.image.max() <= 1.0
    assert 0.0 <= s.disparity.min() and s.disparity.max() <= 1.0
    assert s.valid.all()


def test_make_scene_deterministic_per_seed():
    a, b, c = make_scene(7, 48, 48), make_scene(7, 48, 48), make_scene(8, 48, 48)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.disparity, b.disparity)
    assert not np.array_equal(a.image, c.image)
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    assert np.array_equal(make_scene(g1, 32, 32).image, make_scene(g2, 32, 32).image)


def test_make_scene_has_depth_layers_and_texture_everywhere():
    for seed in range(6):
        s = make_scene(seed, 96, 96)
        # several depths with a sizable spread
        assert np.ptp(s.disparity) >= 0.4 - 1e-6
        assert len(np.unique(np.round(s.disparity, 2))) >= 3
        # texture at a fine scale in (almost) every region: local Laplacian energy in 8x8 blocks
        grey = s.image.mean(0)
        lap = np.abs(cv2.Laplacian(grey, cv2.CV_32F))
        blocks = lap.reshape(12, 8, 12, 8).mean((1, 3))
        assert (blocks > 0.01).mean() > 0.9, seed


def test_depth_edges_coincide_with_image_edges():
    # the painter's algorithm paints colour and disparity together: where disparity jumps, the texture changes
    s = make_scene(11, 128, 128, n_objects=(6, 6))
    jump = np.abs(np.diff(s.disparity, axis=1)) > 0.05
    assert jump.sum() > 20
    colour_step = np.abs(np.diff(s.image, axis=2)).sum(0)
    assert np.median(colour_step[jump]) > np.median(colour_step[~jump])


def test_make_scene_rejects_bad_input():
    with pytest.raises(StackMFFError, match="at least 8x8"):
        make_scene(0, 4, 64)
    with pytest.raises(StackMFFError, match="seed"):
        make_scene("x", 16, 16)  # type: ignore[arg-type]
