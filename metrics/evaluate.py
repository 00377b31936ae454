"""Evaluating fused results of a benchmark tree into a tidy table (used by ``stackmff evaluate`` and the DVC stage).

Layouts:

- fused results: ``<fused_root>/<dataset>/<scene>.<ext>`` (what :func:`stackmff.fusion.run.fuse_dataset` and
  ``fuse_pairs`` write, and how the StackMFF authors publish their benchmark results);
- benchmark: stacks ``<benchmark_root>/<dataset>/dof_stack/<scene>/`` (ground truth, when present, in
  ``<dataset>/AiF/<scene>.<ext>``) and pairs ``<benchmark_root>/<dataset>/{A,B}/<scene>.<ext>``, found with
  :func:`stackmff.io.find_stack_scenes` / :func:`stackmff.io.find_pair_scenes`.

The table has one row per (method, dataset, scene, metric) with columns ``method, dataset, scene, metric, value``.
Full-reference metrics are computed only where a ground truth exists; ``scd`` only for pairs.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from stackmff.color import luma
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, find_pair_scenes, find_stack_scenes, load_image, load_stack

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

__all__ = ["COLUMNS", "METRICS", "MetricSpec", "check_table_path", "evaluate_images", "evaluate_tree", "write_table"]

log = logging.getLogger("stackmff")

COLUMNS = ("method", "dataset", "scene", "metric", "value")


@dataclass(frozen=True)
class MetricSpec:
    """How the evaluation calls one metric.

    Attributes:
        fn: the metric function.
        needs: ``"reference"`` (fused vs ground truth), ``"sources"`` (fused vs N sources), ``"pair"`` (exactly two
            sources) or ``"image"`` (fused alone).
        higher_is_better: direction, for reports.
    """

    fn: Callable
    needs: str
    higher_is_better: bool


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
    "sf": MetricSpec(spatial_frequency, "image", True),
    "ag": MetricSpec(average_gradient, "image", True),
    "en": MetricSpec(entropy, "image", True),
    "sd": MetricSpec(standard_deviation, "image", True),
    "piqe": MetricSpec(piqe, "image", False),
    "niqe": MetricSpec(niqe, "image", False),
}


def _check_metric_names(metrics: Iterable[str] | None) -> list[str]:
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
    metrics: Sequence[str] | None = None,
) -> dict[str, float]:
    """Compute the applicable metrics for one fused image.

    Metrics whose inputs are missing (no ``reference`` for full-reference metrics, no ``sources``, or N != 2 for
    ``scd``) are left out. A metric that cannot be computed on these images (e.g. MS-SSIM on images smaller than
    161 px) gives NaN with a warning. Colour and grayscale inputs are mixed by converting all to luma.

    Args:
        fused: ``(C, H, W)`` float in [0, 1].
        sources: ``(N, C, H, W)`` float in [0, 1], same H, W.
        reference: ``(C, H, W)`` ground truth in [0, 1], same H, W.
        metrics: names from :data:`METRICS` (default: all).

    Returns:
        ``{metric name: value}`` in the order of ``metrics``.

    Raises:
        StackMFFError: unknown metric name, or sizes of fused / sources / reference differ.
    """
    names = _check_metric_names(metrics)
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
        else:
            args = (fused,)
        try:
            out[name] = float(spec.fn(*args, data_range=1.0))
        except ValueError as exc:
            log.warning("%s not computed: %s", name, exc)
            out[name] = math.nan
    return out


def _find_fused(fused_root: Path, dataset: str, scene: str) -> Path | None:
    ddir = fused_root / dataset
    for ext in sorted(IMAGE_EXTENSIONS):
        for cand in (ddir / f"{scene}{ext}", ddir / f"{scene}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def _sharpest(stack: np.ndarray) -> np.ndarray:
    """The layer ``(C, H, W)`` of ``stack (N, C, H, W)`` with the largest variance of the Laplacian of its luma."""
    scores = [cv2.Laplacian(luma(layer).astype(np.float32), cv2.CV_32F).var() for layer in stack]
    return stack[int(np.argmax(scores))]


def _register(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Warp ``moving (C, h, w)`` onto the grid of ``fixed (C', H, W)`` with ORB features and a RANSAC homography.

    This is the upstream StackMFF evaluation's fallback for fused results whose size differs from the ground truth.
    """

    from stackmff.align import orb_transform

    def gray8(x: np.ndarray) -> np.ndarray:
        return np.rint(luma(x) * 255).astype(np.uint8)

    # the best half of the matches (at least 10), no inlier count: the upstream evaluation's settings
    hmat = orb_transform(
        gray8(moving), gray8(fixed), n_features=5000, min_keypoints=10, best_share=0.5, min_matches=10, min_inliers=0
    )
    if hmat is None:
        raise StackMFFError(
            "cannot register the fused image to the sources: too few ORB features or no homography found; "
            "fuse at full size"
        )
    h, w = fixed.shape[-2:]
    warped = cv2.warpPerspective(
        moving.transpose(1, 2, 0), hmat, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    warped = warped[..., None] if warped.ndim == 2 else warped
    return np.clip(warped.transpose(2, 0, 1), 0.0, 1.0).astype(np.float32)


def evaluate_tree(
    fused_root: str | os.PathLike,
    *,
    benchmark_root: str | os.PathLike,
    method: str,
    datasets: Iterable[str] | None = None,
    metrics: Sequence[str] | None = None,
    on_size_mismatch: str = "error",
) -> pd.DataFrame:
    """Evaluate every fused result of a method against its benchmark sources and ground truth.

    Args:
        fused_root: folder holding ``<dataset>/<scene>.<ext>`` fused images.
        benchmark_root: benchmark tree with stack datasets (``<dataset>/dof_stack/<scene>/``, optional
            ``<dataset>/AiF/``) and/or pair datasets (``<dataset>/{A,B}/``).
        method: method name written into the ``method`` column.
        datasets: only these datasets (default: all found in ``benchmark_root``).
        metrics: metric names from :data:`METRICS` (default: all; see ``stackmff evaluate --help``).
        on_size_mismatch: when a fused image's size differs from its sources: ``"error"`` (default), ``"skip"``
            the scene with a warning, or ``"register"`` it onto the sources (ORB + homography, as upstream).

    Returns:
        DataFrame with columns ``method, dataset, scene, metric, value`` (one row per scene and applicable metric;
        NaN where a metric is undefined for that scene). Scenes without a fused image are skipped with a warning.

    Raises:
        StackMFFError: a root missing, a requested dataset absent, no scene found, no fused result found at all,
            an unknown metric or option, or (with ``"error"``) a size mismatch.
    """
    names = _check_metric_names(metrics)
    if on_size_mismatch not in ("error", "skip", "register"):
        raise StackMFFError(f"on_size_mismatch must be one of error, skip, register; got {on_size_mismatch!r}")
    fused_root, benchmark_root = Path(fused_root), Path(benchmark_root)
    if not fused_root.is_dir():
        raise StackMFFError(f"fused results folder not found: {fused_root}; pass the folder fuse-dataset wrote")
    if not benchmark_root.is_dir():
        raise StackMFFError(f"benchmark root not found: {benchmark_root}; check --benchmark")
    wanted = None if datasets is None else list(datasets)
    scenes: list = []
    for finder in (find_stack_scenes, find_pair_scenes):
        try:
            scenes.extend(finder(benchmark_root))
        except StackMFFError as exc:
            if not str(exc).startswith("no "):  # "no focal stacks/pairs found": that kind is absent; else a real error
                raise
    if wanted is not None:
        found = {s.dataset for s in scenes}
        missing = [d for d in wanted if d not in found]
        if missing:
            raise StackMFFError(
                f"dataset(s) not found under {benchmark_root}: {', '.join(missing)}; "
                f"available: {', '.join(sorted(found)) or 'none'}"
            )
        scenes = [s for s in scenes if s.dataset in wanted]
    if not scenes:
        raise StackMFFError(
            f"no stacks or pairs found under {benchmark_root}; expected <dataset>/dof_stack/<scene>/ or <dataset>/A,B/"
        )
    rows: list[tuple] = []
    absent: list[str] = []
    for sc in scenes:
        fpath = _find_fused(fused_root, sc.dataset, sc.scene)
        if fpath is None:
            absent.append(f"{sc.dataset}/{sc.scene}")
            continue
        fused, _ = load_image(fpath)
        if hasattr(sc, "stack_dir"):
            sources = load_stack(sc.stack_dir, min_layers=1).images
            gt_path = sc.ground_truth
        else:
            sources = load_stack([sc.a, sc.b]).images
            gt_path = None
        reference = load_image(gt_path)[0] if gt_path is not None else None
        target = sources.shape[-2:]
        if fused.shape[-2:] != target or (reference is not None and reference.shape[-2:] != target):
            msg = (
                f"{sc.dataset}/{sc.scene}: fused {fused.shape[-1]}x{fused.shape[-2]}, sources "
                f"{target[1]}x{target[0]}"
                + (f", ground truth {reference.shape[-1]}x{reference.shape[-2]}" if reference is not None else "")
            )
            if on_size_mismatch == "error":
                raise StackMFFError(f"{msg}: sizes differ; pass --on-size-mismatch register or skip")
            if on_size_mismatch == "skip":
                log.warning("%s: sizes differ, scene skipped", msg)
                continue
            log.warning("%s: sizes differ, registering with ORB + homography", msg)
            if reference is not None and reference.shape[-2:] != target:
                reference = _register(reference, _sharpest(sources))
            if fused.shape[-2:] != target:
                # the ground truth is the best anchor (as upstream); without one, the sharpest source layer
                fused = _register(fused, reference if reference is not None else _sharpest(sources))
        values = evaluate_images(fused, sources=sources, reference=reference, metrics=names)
        rows.extend((method, sc.dataset, sc.scene, k, v) for k, v in values.items())
    if absent:
        log.warning(
            "no fused result for %d scene(s) under %s: %s",
            len(absent),
            fused_root,
            ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""),
        )
    if len(absent) == len(scenes):
        raise StackMFFError(
            f"no fused results found under {fused_root} for the {len(scenes)} benchmark scenes; "
            "expected <fused_root>/<dataset>/<scene>.png"
        )
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS))


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
        df: the table, e.g. from :func:`evaluate_tree`.
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
