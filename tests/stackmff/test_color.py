"""The one luma of the project: Rec.601 on NumPy arrays and torch tensors, any channel axis."""

import cv2
import numpy as np
import pytest
import torch

from stackmff.color import luma


def test_luma_matches_opencv_rgb2gray():
    rng = np.random.default_rng(0)
    hwc = rng.random((9, 11, 3), dtype=np.float32)
    np.testing.assert_allclose(luma(hwc, axis=-1), cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), atol=1e-6)
    np.testing.assert_allclose(luma(hwc.transpose(2, 0, 1)), cv2.cvtColor(hwc, cv2.COLOR_RGB2GRAY), atol=1e-6)


def test_luma_unit_channels_are_the_rec601_weights():
    img = np.zeros((3, 1, 3), np.float32)
    img[0, 0, 0], img[1, 0, 1], img[2, 0, 2] = 1, 1, 1
    np.testing.assert_allclose(luma(img)[0], [0.299, 0.587, 0.114], atol=1e-7)
    assert luma(img).dtype == np.float32


def test_luma_torch_batch_and_keepdims():
    x = torch.rand(2, 3, 3, 4, 5)  # (B, N, C, H, W)
    expect = 0.299 * x[:, :, 0] + 0.587 * x[:, :, 1] + 0.114 * x[:, :, 2]
    torch.testing.assert_close(luma(x), expect)
    assert luma(x, keepdims=True).shape == (2, 3, 1, 4, 5)


def test_luma_gray_input_is_returned_unchanged():
    g = np.random.default_rng(1).random((4, 1, 6, 7), dtype=np.float32)
    assert luma(g).shape == (4, 6, 7)
    np.testing.assert_array_equal(luma(g), g[:, 0])
    assert luma(g, keepdims=True) is g


def test_luma_rejects_two_channels():
    with pytest.raises(ValueError, match="1 or 3 channels"):
        luma(np.zeros((2, 4, 4), np.float32))
