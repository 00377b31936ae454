"""Upstream depth errors (RMSE, logRMS, AbsRel, SqRel, ...) against values computed by hand / plain Python."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metrics.depth_errors import abs_rel, depth_errors, index_map_errors, log_rms, mean_ratio, sq_rel


def _reference(f8, a8):
    # upstream simple_metric.py's formulas written out pixel by pixel in plain Python (8-bit inputs / 255)
    f = [v / 255.0 for v in np.asarray(f8, float).ravel()]
    a = [v / 255.0 for v in np.asarray(a8, float).ravel()]
    m = len(f)
    mse = sum((x - y) ** 2 for x, y in zip(f, a, strict=True)) / m
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": sum(abs(x - y) for x, y in zip(f, a, strict=True)) / m,
        "log_rms": math.sqrt(sum((math.log(1 + x) - math.log(1 + y)) ** 2 for x, y in zip(f, a, strict=True)) / m),
        "abs_rel": sum(abs(x - y) / (y + 1e-8) for x, y in zip(f, a, strict=True)) / m,
        "sq_rel": sum((x - y) ** 2 / (y + 1e-8) for x, y in zip(f, a, strict=True)) / m,
        "mean_ratio": (sum(a) / m) / (sum(f) / m),
    }


def test_depth_errors_match_the_written_out_formulas():
    rng = np.random.default_rng(0)
    gt = rng.integers(1, 256, (12, 17)).astype(np.uint8)
    pred = np.clip(gt.astype(int) + rng.integers(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    got = depth_errors(pred, gt, data_range=255)
    ref = _reference(pred, gt)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12), k
    assert log_rms(pred, gt, data_range=255) == pytest.approx(ref["log_rms"], rel=1e-12)
    assert abs_rel(pred, gt, data_range=255) == pytest.approx(ref["abs_rel"], rel=1e-12)
    assert sq_rel(pred, gt, data_range=255) == pytest.approx(ref["sq_rel"], rel=1e-12)
    assert mean_ratio(pred, gt, data_range=255) == pytest.approx(ref["mean_ratio"], rel=1e-12)


def test_small_case_by_hand():
    gt = np.array([[0.5, 1.0], [0.5, 1.0]])
    pred = np.array([[0.25, 1.0], [0.25, 1.0]])
    e = depth_errors(pred, gt)
    assert e["mse"] == pytest.approx(0.03125)  # (0.25² + 0) / 2 per row
    assert e["abs_rel"] == pytest.approx(0.25, rel=1e-7)  # (0.25 / 0.5) / 2
    assert e["sq_rel"] == pytest.approx(0.0625, rel=1e-7)  # (0.0625 / 0.5) / 2
    assert e["log_rms"] == pytest.approx(math.sqrt((math.log(1.25) - math.log(1.5)) ** 2 / 2))
    assert e["mean_ratio"] == pytest.approx(0.75 / 0.625)
    assert depth_errors(gt, gt)["rmse"] == 0.0


def test_zero_ground_truth_weighs_like_upstream():
    # upstream's eps: one unit of error where the truth is 0 costs 1e8
    assert abs_rel(np.ones((2, 2)), np.zeros((2, 2))) == pytest.approx(1e8)


def test_index_maps_are_compared_in_layer_units_and_batches_work():
    gt = np.array([[0, 1], [2, 3]])
    pred = np.array([[0, 1], [3, 3]])
    e = index_map_errors(pred, gt, 4)
    assert e["mae"] == pytest.approx((1 / 3) / 4)
    batch = torch.tensor(np.stack([pred, gt])[:, None], dtype=torch.float64) / 3
    out = depth_errors(batch, torch.tensor(np.stack([gt, gt])[:, None], dtype=torch.float64) / 3)
    assert out["mae"].shape == (2,) and float(out["mae"][1]) == 0.0
    with pytest.raises(ValueError, match="n_layers"):
        index_map_errors(pred, gt, 1)
    with pytest.raises(ValueError):
        depth_errors(np.zeros((2, 2)), np.zeros((3, 3)))
