"""Scoring the fused results of a benchmark tree into a tidy table (``stackmff evaluate``, the DVC ``evaluate``
stages and the Prefect benchmark flow).

Layouts: fused results ``<fused_root>/<dataset>/<scene>.<ext>`` (what :func:`~stackmff.benchmark.fuse_tree`
writes, and how the StackMFF authors publish their results), with the method's index maps in
``<fused_root>/<dataset>/index_maps/<scene>.png`` where it has them; the benchmark tree of :func:`find_scenes`
(stacks with optional ``AiF/`` ground truth and ``focus_index_gt/``, and pairs). Full-reference metrics only where a
ground truth exists, index errors where both index maps exist, ``scd`` only for pairs
(:data:`metrics.evaluate.METRICS`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from metrics.evaluate import COLUMNS, check_metric_names, evaluate_images

from ..color import luma
from ..errors import StackMFFError
from ..io import IMAGE_EXTENSIONS, load_image, load_stack
from .scenes import find_scenes

__all__ = ["evaluate_tree", "find_fused", "find_index_map"]

log = logging.getLogger("stackmff")

SIZE_MISMATCH = ("error", "skip", "register")


def find_fused(fused_root: str | os.PathLike, dataset: str, scene: str) -> Path | None:
    """The fused result ``<fused_root>/<dataset>/<scene>.<ext>`` of any image extension, or None."""
    ddir = Path(fused_root) / dataset
    for ext in sorted(IMAGE_EXTENSIONS):
        for cand in (ddir / f"{scene}{ext}", ddir / f"{scene}{ext.upper()}"):
            if cand.is_file():
                return cand
    return None


def find_index_map(fused_root: str | os.PathLike, dataset: str, scene: str) -> Path | None:
    """The method's index map ``<fused_root>/<dataset>/index_maps/<scene>.png`` (16-bit layer numbers), or None."""
    path = Path(fused_root) / dataset / "index_maps" / f"{scene}.png"
    return path if path.is_file() else None


def _read_index_map(path: Path) -> np.ndarray:
    """A 16-bit index-map PNG as ``(H, W)`` int64 layer numbers (exact: the file holds the integers)."""
    from ..io import read_image_file

    arr = read_image_file(path)[0][0]
    return np.asarray(arr[..., 0] if arr.ndim == 3 else arr).astype(np.int64)


def _sharpest(stack: np.ndarray) -> np.ndarray:
    """The layer ``(C, H, W)`` of ``stack (N, C, H, W)`` with the largest variance of the Laplacian of its luma."""
    scores = [cv2.Laplacian(luma(layer).astype(np.float32), cv2.CV_32F).var() for layer in stack]
    return stack[int(np.argmax(scores))]


def _register(moving: np.ndarray, fixed: np.ndarray) -> np.ndarray:
    """Warp ``moving (C, h, w)`` onto the grid of ``fixed (C', H, W)`` with ORB features and a RANSAC homography.

    This is the upstream StackMFF evaluation's fallback for fused results whose size differs from the ground truth.
    """
    from ..align import orb_transform

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
    require_results: bool = True,
) -> pd.DataFrame:
    """Evaluate every fused result of a method against its benchmark sources and ground truth.

    Args:
        fused_root: folder holding ``<dataset>/<scene>.<ext>`` fused images.
        benchmark_root: benchmark tree with stack datasets (``<dataset>/dof_stack/<scene>/``, optional
            ``<dataset>/AiF/``) and/or pair datasets (``<dataset>/{A,B}/``).
        method: method name written into the ``method`` column.
        datasets: only these datasets (default: all found in ``benchmark_root``).
        metrics: metric names from :data:`metrics.evaluate.METRICS` (default: all).
        on_size_mismatch: when a fused image's size differs from its sources: ``"error"`` (default), ``"skip"``
            the scene with a warning, or ``"register"`` it onto the sources (ORB + homography, as upstream).
        require_results: raise when no scene has a fused result; False returns an empty table instead (a method
            the fuse stage reported absent).

    Returns:
        DataFrame with columns :data:`metrics.evaluate.COLUMNS` (one row per scene and applicable metric; NaN where
        a metric is undefined for that scene). Scenes without a fused image are skipped with a warning.

    Raises:
        StackMFFError: a root missing, a requested dataset absent, no scene found, no fused result found at all
            (with ``require_results``), an unknown metric or option, or (with ``"error"``) a size mismatch.
    """
    names = check_metric_names(metrics)
    if on_size_mismatch not in SIZE_MISMATCH:
        raise StackMFFError(f"on_size_mismatch must be one of {', '.join(SIZE_MISMATCH)}; got {on_size_mismatch!r}")
    fused_root, benchmark_root = Path(fused_root), Path(benchmark_root)
    if not benchmark_root.is_dir():
        raise StackMFFError(f"benchmark root not found: {benchmark_root}; check --benchmark")
    empty = pd.DataFrame({c: pd.Series(dtype=float if c == "value" else object) for c in COLUMNS})
    if not fused_root.is_dir():
        if not require_results:
            return empty
        raise StackMFFError(f"fused results folder not found: {fused_root}; pass the folder fuse-dataset wrote")
    scenes = find_scenes(benchmark_root, datasets)
    rows: list[tuple] = []
    absent: list[str] = []
    for sc in scenes:
        fpath = find_fused(fused_root, sc.dataset, sc.scene)
        if fpath is None:
            absent.append(sc.name)
            continue
        fused, _ = load_image(fpath)
        sources = load_stack(list(sc.inputs), min_layers=1).images
        reference = load_image(sc.ground_truth)[0] if sc.ground_truth is not None else None
        target = sources.shape[-2:]
        if fused.shape[-2:] != target or (reference is not None and reference.shape[-2:] != target):
            msg = f"{sc.name}: fused {fused.shape[-1]}x{fused.shape[-2]}, sources {target[1]}x{target[0]}" + (
                f", ground truth {reference.shape[-1]}x{reference.shape[-2]}" if reference is not None else ""
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
        index_map = index_gt = None
        imap = find_index_map(fused_root, sc.dataset, sc.scene)
        if imap is not None and sc.index_gt is not None:
            index_map, index_gt = _read_index_map(imap), np.load(sc.index_gt)
            if index_map.shape != index_gt.shape or index_gt.shape != tuple(fused.shape[-2:]):
                log.warning("%s: index map %s vs ground truth %s: index errors skipped", sc.name, index_map.shape,
                            index_gt.shape)  # fmt: skip
                index_map = index_gt = None
        values = evaluate_images(
            fused, sources=sources, reference=reference, index_map=index_map, index_gt=index_gt, metrics=names
        )
        rows.extend((method, sc.dataset, sc.scene, k, v) for k, v in values.items())
    if absent and len(absent) < len(scenes):
        log.warning(
            "no fused result for %d scene(s) under %s: %s",
            len(absent),
            fused_root,
            ", ".join(absent[:5]) + (" ..." if len(absent) > 5 else ""),
        )
    if len(absent) == len(scenes):
        if not require_results:
            return empty
        raise StackMFFError(
            f"no fused results found under {fused_root} for the {len(scenes)} benchmark scenes; "
            "expected <fused_root>/<dataset>/<scene>.png"
        )
    return pd.DataFrame.from_records(rows, columns=list(COLUMNS)) if rows else empty
