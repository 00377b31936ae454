"""Depth Anything V2 stage with a tiny randomly initialised model of the real architecture class."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _helpers import write_tiny_depth_anything

from stackmff.errors import StackMFFError

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

from stackmff.data.depth import estimate_depth  # noqa: E402


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    return write_tiny_depth_anything(tmp_path_factory.mktemp("dav2"))


@pytest.mark.slow  # importing transformers + loading the model takes ~10 s on the 2-core machine
def test_depth_end_to_end_batched_and_resumable(tmp_path, tiny_checkpoint):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(40, 60), (40, 60), (50, 30)]):
        cv2.imwrite(str(images / f"im{i}.jpg"), (rng.random((h, w, 3)) * 255).astype(np.uint8))
    out = tmp_path / "depth"
    stats = estimate_depth(images, out, checkpoint=tiny_checkpoint, batch_size=2, progress=False)
    assert stats == {"written": 3, "skipped": 0}
    for i, (h, w) in enumerate([(40, 60), (40, 60), (50, 30)]):
        d = cv2.imread(str(out / f"im{i}.png"), cv2.IMREAD_UNCHANGED)
        assert d.dtype == np.uint16 and d.shape == (h, w)
        assert d.min() == 0 and d.max() == 65535  # per-image min-max
    # batching does not change results: a batch of one gives the same map
    single = tmp_path / "single"
    estimate_depth(images / "im1.jpg", single, checkpoint=tiny_checkpoint, batch_size=1, progress=False)
    a = cv2.imread(str(out / "im1.png"), cv2.IMREAD_UNCHANGED).astype(int)
    b = cv2.imread(str(single / "im1.png"), cv2.IMREAD_UNCHANGED).astype(int)
    assert np.abs(a - b).max() <= 2
    # resumable: done images are skipped without loading the model
    (out / "im2.png").unlink()
    assert estimate_depth(images, out, checkpoint=tiny_checkpoint, progress=False) == {"written": 1, "skipped": 2}


def test_missing_checkpoint_explains(tmp_path):
    (tmp_path / "images").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(StackMFFError, match="huggingface-cli download"):
        estimate_depth(tmp_path / "images", tmp_path / "d", checkpoint=tmp_path / "nockpt", progress=False)
    with pytest.raises(StackMFFError, match="stackmff extract"):
        estimate_depth(tmp_path / "nothing", tmp_path / "d", checkpoint=tmp_path, progress=False)
