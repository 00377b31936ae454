"""Tests for the procedural RGB-D scene generator and the real RGB-D sample readers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stackmff.errors import StackMFFError
from stackmff.data.procedural import load_rgbd_samples, make_scene

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


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


def test_load_rgbd_samples_from_fake_tree(tmp_path):
    scene = tmp_path / "middlebury_rgbd" / "toy"
    scene.mkdir(parents=True)
    img = (np.random.default_rng(0).random((20, 30, 3)) * 255).astype(np.uint8)
    disp = np.zeros((20, 30), np.uint8)
    disp[:, :15] = 40
    disp[:, 15:] = 200
    disp[5:8, 5:8] = 0  # unknown -> filled from the nearest valid pixel (40)
    cv2.imwrite(str(scene / "image.png"), img[..., ::-1])
    cv2.imwrite(str(scene / "disparity_gt.png"), disp)
    tum = tmp_path / "rgbd_samples_open3d" / "tum"
    tum.mkdir(parents=True)
    cv2.imwrite(str(tum / "image.png"), img[..., ::-1])
    depth = np.full((20, 30), 10000, np.uint16)  # 2 m
    depth[:, 20:] = 5000  # 1 m: nearer -> larger disparity
    depth[0, 0] = 0
    cv2.imwrite(str(tum / "depth.png"), depth)
    scenes = load_rgbd_samples(tmp_path)
    assert [s.name for s in scenes] == ["middlebury/toy", "open3d/tum"]
    m, t = scenes
    np.testing.assert_allclose(m.image.transpose(1, 2, 0), img / 255.0, atol=1e-6)
    assert m.disparity[0, 0] == 0.0 and m.disparity[0, 29] == 1.0 and m.disparity[6, 6] == 0.0
    assert not m.valid[6, 6] and m.valid.sum() == 20 * 30 - 9
    assert t.disparity[5, 25] == 1.0 and t.disparity[5, 5] == 0.0 and not t.valid[0, 0]


def test_load_rgbd_samples_missing_root(tmp_path):
    with pytest.raises(StackMFFError, match="not found"):
        load_rgbd_samples(tmp_path / "nope")


@pytest.mark.shared
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data not present")
def test_load_real_samples():
    scenes = load_rgbd_samples(SHARED)
    names = {s.name for s in scenes}
    assert {"middlebury/art", "open3d/tum"} <= names and "open3d/nyu" not in names
    for s in scenes:
        assert s.image.shape[1:] == s.disparity.shape
        assert s.disparity.min() == 0.0 and s.disparity.max() == 1.0
        assert s.valid.mean() > 0.75
