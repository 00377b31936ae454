"""The shared input contract of every metric: accepted layouts, return kinds and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from metrics import entropy, qabf, ssim
from metrics._validate import prepare, prepare_sources


def test_layouts_become_bchw():
    assert prepare(np.zeros((5, 6))).t.shape == (1, 1, 5, 6)
    assert prepare(np.zeros((3, 5, 6))).t.shape == (1, 3, 5, 6)
    p = prepare(np.zeros((2, 1, 5, 6)))
    assert p.t.shape == (2, 1, 5, 6) and p.batched


def test_sources_layouts():
    f2 = prepare(np.zeros((5, 6)))
    assert prepare_sources(np.zeros((4, 5, 6)), f2).shape == (1, 4, 1, 5, 6)
    f3 = prepare(np.zeros((3, 5, 6)))
    assert prepare_sources(np.zeros((4, 3, 5, 6)), f3).shape == (1, 4, 3, 5, 6)
    assert prepare_sources([np.zeros((3, 5, 6))] * 2, f3).shape == (1, 2, 3, 5, 6)
    f4 = prepare(np.zeros((2, 3, 5, 6)))
    assert prepare_sources(np.zeros((2, 4, 3, 5, 6)), f4).shape == (2, 4, 3, 5, 6)
    with pytest.raises(ValueError, match=r"\(B, N, C, H, W\) = \(2, N, 3, 5, 6\)"):
        prepare_sources(np.zeros((1, 4, 3, 5, 6)), f4)
    with pytest.raises(ValueError, match="at least one image"):
        prepare_sources([], f3)


def test_return_kinds(gray):
    assert isinstance(entropy(gray), float)
    out = entropy(np.stack([gray, gray])[:, None])
    assert isinstance(out, np.ndarray) and out.shape == (2,)
    t = entropy(torch.from_numpy(gray).float())
    assert isinstance(t, torch.Tensor) and t.ndim == 0 and t.dtype == torch.float32
    t64 = qabf(torch.from_numpy(gray), torch.from_numpy(gray)[None])
    assert t64.dtype == torch.float64


def test_uint16_and_bool_inputs(gray):
    u16 = np.rint(gray * 65535).astype(np.uint16)
    assert entropy(u16, data_range=65535) == pytest.approx(entropy(gray), abs=1e-9)
    assert entropy(np.eye(8, dtype=bool)) == pytest.approx(entropy(np.eye(8)))


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (("x", "y"), {}, TypeError, "numpy array or torch tensor"),
        ((np.zeros((2, 2, 3, 8, 8)), np.zeros((2, 2, 3, 8, 8))), {}, ValueError, r"\(H, W\), \(C, H, W\)"),
        ((np.zeros((8, 8, 3)), np.zeros((8, 8, 3))), {}, ValueError, "channels-first"),
        ((np.zeros((16, 16)), np.zeros((16, 16))), {"data_range": 0}, ValueError, "data_range must be a positive"),
        ((np.full((16, 16), -0.5), np.zeros((16, 16))), {}, ValueError, "clip first"),
        ((np.zeros((16, 16), complex), np.zeros((16, 16))), {}, TypeError, "real"),
        ((np.array([["a"]]), np.zeros((1, 1))), {}, TypeError, "numeric"),
    ],
)
def test_errors_are_typed_one_liners(args, kwargs, exc, match):
    with pytest.raises(exc, match=match) as info:
        ssim(*args, **kwargs)
    assert "\n" not in str(info.value)
