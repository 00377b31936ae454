"""The metric registry and the evaluation of one fused image; the table format and its writer.

:data:`METRICS` names every metric and what it needs (ground truth, sources, a pair, nothing);
:func:`evaluate_images` computes the applicable ones for one fused image. Walking a benchmark tree (finding scenes,
loading, registering results of another size) is the application layer's job:
:func:`stackmff.benchmark.evaluate_tree`, which writes tables of :data:`COLUMNS` (one row per
``method, dataset, scene, metric, value``) with :func:`write_table`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from stackmff.color import luma
from stackmff.errors import StackMFFError

from . import (
    average_gradient,
    blurred_share,
    entropy,
    fsim,
    ghost_share,
    gmsd,
    halo,
    mae,
    ms_ssim,
    mse,
    mutual_information,
    niqe,
    normalized_mutual_information,
    overshoot,
    piqe,
    psnr,
    psnr_gray8,
    qabf,
    rmse,
    scd,
    sharpness_ratio,
    spatial_frequency,
    ssim,
    ssim_gray8,
    standard_deviation,
    vif_p,
)
from .depth_errors import index_map_errors

__all__ = [
    "COLUMNS",
    "METRICS",
    "MetricSpec",
    "check_metric_names",
    "check_table_path",
    "evaluate_images",
    "write_table",
]

log = logging.getLogger("stackmff")

COLUMNS = ("method", "dataset", "scene", "metric", "value")


@dataclass(frozen=True)
class MetricSpec:
    """How the evaluation calls one metric.

    Attributes:
        fn: the metric function.
        needs: ``"reference"`` (fused vs ground truth), ``"sources"`` (fused vs N sources), ``"pair"`` (exactly two
            sources), ``"image"`` (fused alone) or ``"index"`` (the method's index map vs the ground-truth focus index:
            ``fn(index_map, index_gt, n_layers)``).
        higher_is_better: direction, for reports.
    """

    fn: Callable
    needs: str
    higher_is_better: bool


def _index_error(key: str) -> Callable:
    def fn(index_map: np.ndarray, index_gt: np.ndarray, n_layers: int) -> float:
        return float(index_map_errors(index_map, index_gt, n_layers)[key])

    fn.__name__ = f"index_{key}"
    fn.__doc__ = f"``{key}`` of :func:`metrics.depth_errors.index_map_errors` (index maps divided by N - 1)."
    return fn


# Table names follow the field's abbreviations. Reference metrics: RGB unless the name says gray.
METRICS: dict[str, MetricSpec] = {
    "psnr_gray8": MetricSpec(psnr_gray8, "reference", True),
    "ssim_gray8": MetricSpec(ssim_gray8, "reference", True),
    "psnr": MetricSpec(psnr, "reference", True),
    "ssim": MetricSpec(ssim, "reference", True),
    "ms_ssim": MetricSpec(ms_ssim, "reference", True),
    "gmsd": MetricSpec(gmsd, "reference", False),
    "fsim": MetricSpec(fsim, "reference", True),
    "vif_p": MetricSpec(vif_p, "reference", True),
    "mse": MetricSpec(mse, "reference", False),
    "mae": MetricSpec(mae, "reference", False),
    "rmse": MetricSpec(rmse, "reference", False),
    "qabf": MetricSpec(qabf, "sources", True),
    "mi": MetricSpec(mutual_information, "sources", True),
    "nmi": MetricSpec(normalized_mutual_information, "sources", True),
    "halo": MetricSpec(halo, "sources", False),
    "overshoot": MetricSpec(overshoot, "sources", False),
    # no-reference blur check per block against the sharpest layer (metrics/blur_check.py); sources should be registered
    "sharpness_ratio": MetricSpec(sharpness_ratio, "sources", True),
    "blurred_share": MetricSpec(blurred_share, "sources", False),
    "ghost_share": MetricSpec(ghost_share, "sources", False),
    "scd": MetricSpec(scd, "pair", True),
    # the upstream evaluation's depth errors (metrics/depth_errors.py) of the method's index map against the
    # ground-truth focus index, both divided by N - 1; only for methods that pick a layer per pixel
    **{
        f"index_{k}": MetricSpec(_index_error(k), "index", False)
        for k in ("rmse", "mae", "log_rms", "abs_rel", "sq_rel")
    },
    "sf": MetricSpec(spatial_frequency, "image", True),
    "ag": MetricSpec(average_gradient, "image", True),
    "en": MetricSpec(entropy, "image", True),
    "sd": MetricSpec(standard_deviation, "image", True),
    "piqe": MetricSpec(piqe, "image", False),
    "niqe": MetricSpec(niqe, "image", False),
}


def check_metric_names(metrics: Iterable[str] | None) -> list[str]:
    """The metric names to compute (all by default); raises :class:`StackMFFError` for an unknown one."""
    if metrics is None:
        return list(METRICS)
    names = list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise StackMFFError(
            f"unknown metric(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METRICS)}"
        )
    return names


def evaluate_images(
    fused: np.ndarray,
    *,
    sources: np.ndarray | None = None,
    reference: np.ndarray | None = None,
    index_map: np.ndarray | None = None,
    index_gt: np.ndarray | None = None,
    metrics: Sequence[str] | None = None,
) -> dict[str, float]:
    """Compute the applicable metrics for one fused image.

    Metrics whose inputs are missing (no ``reference`` for full-reference metrics, no ``sources``, N != 2 for
    ``scd``, no ``index_map`` or ``index_gt`` for the index errors) are left out. A metric that cannot be computed on these images (e.g. MS-SSIM on images smaller than
    161 px) gives NaN with a warning. Colour and grayscale inputs are mixed by converting all to luma.

    Args:
        fused: ``(C, H, W)`` float in [0, 1].
        sources: ``(N, C, H, W)`` float in [0, 1], same H, W.
        reference: ``(C, H, W)`` ground truth in [0, 1], same H, W.
        index_map: ``(H, W)`` integer layer per pixel chosen by the method.
        index_gt: ``(H, W)`` integer ground-truth focus index; the layer count N is ``sources``' (else the largest
            index + 1).
        metrics: names from :data:`METRICS` (default: all).

    Returns:
        ``{metric name: value}`` in the order of ``metrics``.

    Raises:
        StackMFFError: unknown metric name, or sizes of fused / sources / reference / index maps differ.
    """
    names = check_metric_names(metrics)
    if index_map is not None and index_gt is not None:
        if np.shape(index_map) != np.shape(index_gt) or tuple(np.shape(index_gt)) != tuple(fused.shape[-2:]):
            raise StackMFFError(
                f"index map {np.shape(index_map)}, ground-truth index {np.shape(index_gt)} and fused image "
                f"{tuple(fused.shape[-2:])} differ in size; index errors need the uncropped index map"
            )
        n_layers = sources.shape[0] if sources is not None else int(max(np.max(index_map), np.max(index_gt))) + 1
    channels = {fused.shape[0]}
    if sources is not None:
        channels.add(sources.shape[1])
    if reference is not None:
        channels.add(reference.shape[0])
    if len(channels) > 1:  # e.g. a gray ground truth for colour sources: compare luma
        fused = luma(fused, keepdims=True)
        sources = None if sources is None else luma(sources, keepdims=True)
        reference = None if reference is None else luma(reference, keepdims=True)
    for what, arr in (("sources", sources), ("ground truth", reference)):
        if arr is not None and tuple(arr.shape[-2:]) != tuple(fused.shape[-2:]):
            raise StackMFFError(
                f"fused image is {fused.shape[-1]}x{fused.shape[-2]} but the {what} {arr.shape[-1]}x{arr.shape[-2]}; "
                "use on_size_mismatch='register' (--on-size-mismatch register) or fuse at the original size"
            )
    out: dict[str, float] = {}
    index_errors: dict | ValueError | None = None  # index_map_errors gives every index metric in one pass
    for name in names:
        spec = METRICS[name]
        if spec.needs == "reference":
            if reference is None:
                continue
            args: tuple = (fused, reference)
        elif spec.needs in ("sources", "pair"):
            if sources is None or (spec.needs == "pair" and sources.shape[0] != 2):
                continue
            args = (fused, sources)
        elif spec.needs == "index":
            if index_map is None or index_gt is None:
                continue
            if index_errors is None:
                try:
                    index_errors = index_map_errors(index_map, index_gt, n_layers)
                except ValueError as exc:
                    index_errors = exc
            if isinstance(index_errors, ValueError):
                log.warning("%s not computed: %s", name, index_errors)
                out[name] = math.nan
            else:
                out[name] = float(index_errors[name.removeprefix("index_")])
            continue
        else:
            args = (fused,)
        try:
            out[name] = float(spec.fn(*args, data_range=1.0))
        except ValueError as exc:
            log.warning("%s not computed: %s", name, exc)
            out[name] = math.nan
    return out


def check_table_path(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Raise :class:`StackMFFError` unless ``path`` is a writable ``.csv``/``.parquet`` target; returns it as a Path."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise StackMFFError(f"table must end in .csv or .parquet, got {path.name!r}; rename the output")
    from stackmff.io import check_output_path

    return check_output_path(path, overwrite=overwrite)


def write_table(df: pd.DataFrame, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a table as CSV or Parquet (chosen by the extension) atomically: temp file, then rename.

    Args:
        df: the table, e.g. from :func:`stackmff.benchmark.evaluate_tree`.
        path: ``.csv`` or ``.parquet`` destination; parent folders are created.
        overwrite: replace an existing file.

    Returns:
        the written path.

    Raises:
        StackMFFError: unsupported extension, or the file exists and ``overwrite`` is false.
    """
    from stackmff.io import OutputSet

    path = check_table_path(path, overwrite=overwrite)
    with OutputSet(overwrite=overwrite) as outs:  # checked write, umask permissions, temp removed on failure
        tmp = outs.temp(path)
        if path.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return path
