"""Tests for the readers of real RGB-D samples (Middlebury, Open3D's frames)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from stackmff.data.rgbd import load_rgbd_samples
from stackmff.errors import StackMFFError

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"


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


def test_raw_kinect_pgm_keeps_its_counts_and_grey_images_become_rgb(tmp_path):
    # an 11-bit raw frame declaring maxval 2047: Pillow would stretch it to 16 bits, the NYU formula needs the counts
    nyu = tmp_path / "rgbd_samples_open3d" / "nyu"
    nyu.mkdir(parents=True)
    raw = np.full((12, 16), 800, np.uint16)
    raw[:, 8:] = 1000  # larger raw count = farther
    raw[0, 0] = 2047  # no return
    (nyu / "depth_raw.pgm").write_bytes(b"P5\n# Kinect\n16 12\n2047\n" + raw.astype(">u2").tobytes())
    grey = np.arange(12 * 16, dtype=np.uint8).reshape(12, 16)
    (nyu / "image.ppm").write_bytes(b"P5 16 12 255\n" + grey.tobytes())  # a grey PGM behind a .ppm name
    assert load_rgbd_samples(tmp_path) == []  # unregistered: only on request
    (s,) = load_rgbd_samples(tmp_path, include_unregistered=True)
    assert s.name == "open3d/nyu" and s.image.shape == (3, 12, 16)
    np.testing.assert_array_equal(np.rint(s.image[0] * 255), grey)
    np.testing.assert_array_equal(s.image[0], s.image[2])
    assert s.disparity[5, 2] == 1.0 and s.disparity[5, 12] == 0.0 and not s.valid[0, 0]


def test_raw_pgm_reader_keeps_8_bit_counts(tmp_path):
    from stackmff.data.rgbd import _read_pgm_raw

    raw = np.array([[0, 7, 100, 200]], np.uint8)
    (tmp_path / "d.pgm").write_bytes(b"P5 4 1\n# maxval below 255: Pillow would stretch it\n200\n" + raw.tobytes())
    out = _read_pgm_raw(tmp_path / "d.pgm")
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, raw)
