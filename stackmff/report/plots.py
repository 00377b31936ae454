"""Benchmark plots (matplotlib, Agg backend, PNG): metric means, paired per-scene differences, quality vs runtime,
quality vs layer count N.

Every function takes tidy/summary/runs tables (see :mod:`stackmff.report.tables`), writes one PNG atomically and
returns its path, or None when the data cannot make the plot (e.g. no runtimes for an imported method).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in DVC stages

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..io import atomic_write

__all__ = ["plot_metric_bars", "plot_paired_differences", "plot_quality_vs_n", "plot_quality_vs_runtime"]


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        with atomic_write(path, mode=None, overwrite=True) as tmp:
            fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # the temp name has no .png to go by
    finally:
        plt.close(fig)
    return path


def _colors(methods: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def _fit(ax, lo: float, hi: float, *, axis: str = "y", include: float | None = None) -> None:
    """Fit an axis to ``[lo, hi]`` (+ ``include``) with 8 % padding: differences of 0.1 dB stay visible."""
    if include is not None:
        lo, hi = min(lo, include), max(hi, include)
    pad = (hi - lo) * 0.08 or max(abs(hi) * 0.01, 1e-3)
    (ax.set_ylim if axis == "y" else ax.set_xlim)(lo - pad, hi + pad)


def plot_metric_bars(summary: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """Mean ``metric`` per method (dot, std over scenes as a whisker), one panel per dataset.

    Each panel's axis is fitted to its data (not started at 0), so the 0.5 dB differences that matter are visible;
    datasets get separate panels because their ranges differ. (Kept under its old name; it drew bars before.)

    Args:
        summary: output of :func:`stackmff.report.tables.summarize`.
        metric: metric name.
        path: PNG to write.
    """
    part = summary[(summary["metric"] == metric) & summary["mean"].notna()]
    if part.empty:
        return None
    datasets = sorted(part["dataset"].unique())
    methods = sorted(part["method"].unique())
    colors = _colors(methods)
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(max(4.2, 0.42 * len(methods) + 1.4) * len(datasets), 3.6), squeeze=False
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = part[part["dataset"] == dataset].set_index("method").reindex(methods)
        x = np.arange(len(methods))
        for i, m in enumerate(methods):
            if rows.at[m, "mean"] == rows.at[m, "mean"]:
                ax.errorbar(i, rows.at[m, "mean"], yerr=rows.at[m, "std"], fmt="o", ms=6, capsize=3, color=colors[m])
        lo = float((rows["mean"] - rows["std"]).min())
        hi = float((rows["mean"] + rows["std"]).max())
        _fit(ax, lo, hi)
        ax.set_xticks(x, methods, rotation=40, ha="right", fontsize=8)
        ax.set_title(dataset, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(metric)
    fig.suptitle(f"{metric}: mean ± std over scenes (axes fitted to the data)", fontsize=10)
    return _save(fig, path)


def plot_paired_differences(diffs: pd.DataFrame, metric: str, reference: str, path: str | os.PathLike) -> Path | None:
    """Per-scene ``method - reference`` differences, one panel per dataset, one row of dots per method.

    A row entirely left of 0 means the method is worse than ``reference`` on every scene, however large the spread
    over scenes; the label gives the mean difference and on how many scenes the method beats the reference.

    Args:
        diffs: output of :func:`stackmff.report.tables.paired_differences` (one metric).
        metric: its metric name (axis label).
        reference: the reference method (title).
        path: PNG to write.
    """
    if diffs.empty:
        return None
    datasets = sorted(diffs["dataset"].unique())
    methods = sorted(diffs["method"].unique())
    colors = _colors(methods)
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5.0 * len(datasets), 0.34 * len(methods) + 1.4), squeeze=False, sharey=True
    )
    for ax, dataset in zip(axes[0], datasets, strict=True):
        part = diffs[diffs["dataset"] == dataset]
        for i, m in enumerate(methods):
            d = part[part["method"] == m]["delta"].to_numpy(float)
            if not len(d):
                continue
            jitter = (np.arange(len(d)) - (len(d) - 1) / 2) * (0.5 / max(len(d), 1))
            ax.scatter(d, i + jitter, s=16, color=colors[m], zorder=3)
            ax.plot([d.mean()] * 2, [i - 0.35, i + 0.35], color="k", lw=1.5, zorder=4)
            ax.annotate(
                f"{d.mean():+.2f}, better on {int((d > 0).sum())}/{len(d)}",
                (1.0, i),
                xycoords=("axes fraction", "data"),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
            )
        ax.axvline(0.0, color="#555", lw=1)
        _fit(ax, float(part["delta"].min()), float(part["delta"].max()), axis="x", include=0.0)
        ax.set_yticks(np.arange(len(methods)), methods, fontsize=8)
        ax.set_xlabel(f"{metric} − {reference} (per scene)")
        ax.set_title(dataset, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"paired {metric} differences to {reference} (dots: scenes, bar: mean)", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def plot_quality_vs_runtime(
    summary: pd.DataFrame, runs: pd.DataFrame, metric: str, path: str | os.PathLike, *, dataset: str | None = None
) -> Path | None:
    """Scatter: mean seconds per stack (log x) against mean ``metric``, one point per method.

    Args:
        summary: output of :func:`~stackmff.report.tables.summarize`.
        runs: runs table (:func:`~stackmff.report.tables.read_runs`).
        metric: quality metric on the y axis.
        path: PNG to write.
        dataset: restrict to one dataset (default: mean over all datasets where the metric exists).
    """
    q = summary[summary["metric"] == metric]
    r = runs[runs["seconds"].notna()]
    if dataset is not None:
        q, r = q[q["dataset"] == dataset], r[r["dataset"] == dataset]
    if q.empty or r.empty:
        return None
    quality = q.groupby("method")["mean"].mean()
    seconds = r.groupby("method")["seconds"].mean()
    both = pd.concat([quality.rename("q"), seconds.rename("s")], axis=1).dropna()
    if both.empty:
        return None
    colors = _colors(sorted(both.index))
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for m, row in both.iterrows():
        ax.scatter(row["s"], row["q"], color=colors[m], s=40, zorder=3)
        ax.annotate(m, (row["s"], row["q"]), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("seconds per stack (log)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs runtime" + (f" ({dataset})" if dataset else ""))
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_quality_vs_n(
    tidy: pd.DataFrame, runs: pd.DataFrame, metric: str, path: str | os.PathLike, *, dataset: str | None = None
) -> Path | None:
    """Lines: mean ``metric`` against the stack's layer count N, one line per method.

    N comes from the runs table (``layers`` per dataset/scene); scenes of all methods share it.
    """
    t = tidy[tidy["metric"] == metric]
    if dataset is not None:
        t = t[t["dataset"] == dataset]
    n = runs.dropna(subset=["layers", "scene"]).drop_duplicates(["dataset", "scene"])[["dataset", "scene", "layers"]]
    if t.empty or n.empty:
        return None
    t = t.astype({"scene": str, "dataset": str}).merge(
        n.astype({"scene": str, "dataset": str}), on=["dataset", "scene"]
    )
    if t.empty or t["layers"].nunique() < 2:
        return None
    methods = sorted(t["method"].unique())
    colors = _colors(methods)
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    for m in methods:
        g = t[t["method"] == m].groupby("layers")["value"].mean()
        ax.plot(g.index, g.values, marker="o", ms=3, label=m, color=colors[m])
    ax.set_xlabel("layers N")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} vs stack size" + (f" ({dataset})" if dataset else ""))
    ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    ax.grid(alpha=0.3)
    return _save(fig, path)
