"""Depth / index-map errors of the upstream evaluation (``Evaluate/simple_metric.py`` of StackMFF V3).

For a predicted map ``F`` and its ground truth ``A`` (depth maps, or index maps divided by ``N - 1``), both scaled
to [0, 1] (upstream divides 8-bit maps by 255), means over the pixels:

- MSE ``mean((F - A)²)``, RMSE ``sqrt(MSE)``, MAE ``mean(|F - A|)``;
- logRMS ``sqrt(mean((log(1 + F) - log(1 + A))²))`` (upstream uses ``log1p``, so zero depth is defined);
- AbsRel ``mean(|F - A| / (A + eps))`` and SqRel ``mean((F - A)² / (A + eps))`` with upstream's ``eps = 1e-8``: a
  ground truth of exactly 0 (the farthest/nearest bin of an 8-bit depth map) weighs ~1e8 per unit of error, as
  upstream's numbers do;
- mean ratio ``mean(A) / mean(F)`` (upstream ``mean_diff``, unrounded).

Inputs follow :mod:`metrics._validate`: numpy arrays or torch tensors ``(H, W)``, ``(1, H, W)`` or
``(B, 1, H, W)`` with values in ``[0, data_range]`` (255 for 8-bit depth PNGs).
"""

from __future__ import annotations

import torch

from ._validate import ArrayLike, finish, prepare_reference

__all__ = ["abs_rel", "depth_errors", "index_map_errors", "log_rms", "mean_ratio", "sq_rel"]

EPS = 1e-8  # upstream's guard against division by zero in AbsRel / SqRel


def _pair(pred: ArrayLike, gt: ArrayLike, data_range: float):
    pp, pg = prepare_reference(pred, gt, data_range=data_range, color="rgb")
    return pp, pp.t.to(torch.float64).flatten(1), pg.t.to(torch.float64).flatten(1)


def log_rms(pred: ArrayLike, gt: ArrayLike, *, data_range: float = 1.0):
    """``sqrt(mean((log1p(F) - log1p(A))²))`` on the [0, 1] scale."""
    p, f, a = _pair(pred, gt, data_range)
    return finish(((torch.log1p(f) - torch.log1p(a)) ** 2).mean(1).sqrt(), p)


def abs_rel(pred: ArrayLike, gt: ArrayLike, *, data_range: float = 1.0, eps: float = EPS):
    """``mean(|F - A| / (A + eps))`` on the [0, 1] scale (upstream's eps)."""
    p, f, a = _pair(pred, gt, data_range)
    return finish(((f - a).abs() / (a + eps)).mean(1), p)


def sq_rel(pred: ArrayLike, gt: ArrayLike, *, data_range: float = 1.0, eps: float = EPS):
    """``mean((F - A)² / (A + eps))`` on the [0, 1] scale (upstream's eps)."""
    p, f, a = _pair(pred, gt, data_range)
    return finish(((f - a) ** 2 / (a + eps)).mean(1), p)


def mean_ratio(pred: ArrayLike, gt: ArrayLike, *, data_range: float = 1.0):
    """``mean(A) / mean(F)`` (upstream ``mean_diff``); inf when the prediction is all zero."""
    p, f, a = _pair(pred, gt, data_range)
    return finish(a.mean(1) / f.mean(1), p)


def depth_errors(pred: ArrayLike, gt: ArrayLike, *, data_range: float = 1.0) -> dict:
    """All upstream depth errors of one map (or a batch): ``{"mse", "rmse", "mae", "log_rms", "abs_rel", "sq_rel",
    "mean_ratio"}``, each a float (numpy input) or per-image values (batch / torch)."""
    p, f, a = _pair(pred, gt, data_range)
    d = f - a
    mse = (d**2).mean(1)
    vals = {
        "mse": mse,
        "rmse": mse.sqrt(),
        "mae": d.abs().mean(1),
        "log_rms": ((torch.log1p(f) - torch.log1p(a)) ** 2).mean(1).sqrt(),
        "abs_rel": (d.abs() / (a + EPS)).mean(1),
        "sq_rel": (d**2 / (a + EPS)).mean(1),
        "mean_ratio": a.mean(1) / f.mean(1),
    }
    return {k: finish(v, p) for k, v in vals.items()}


def index_map_errors(pred_index: ArrayLike, gt_index: ArrayLike, n_layers: int) -> dict:
    """:func:`depth_errors` of two index maps (layer numbers 0..N-1), each divided by ``N - 1``.

    Raises:
        ValueError: ``n_layers`` < 2 or an index outside [0, N - 1].
    """
    if n_layers < 2:
        raise ValueError(f"n_layers must be >= 2, got {n_layers}; pass the stack's layer count")
    return depth_errors(pred_index, gt_index, data_range=n_layers - 1)
