"""Benchmark plots (matplotlib, Agg backend, PNG): metric bars, quality vs runtime, quality vs layer count N.

Every function takes tidy/summary/runs tables (see :mod:`stackmff.report.tables`), writes one PNG atomically and
returns its path, or None when the data cannot make the plot (e.g. no runtimes for an imported method).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in DVC stages

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_metric_bars", "plot_quality_vs_n", "plot_quality_vs_runtime"]


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return path


def _colors(methods: Sequence[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab20" if len(methods) > 10 else "tab10")
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def plot_metric_bars(summary: pd.DataFrame, metric: str, path: str | os.PathLike) -> Path | None:
    """Grouped bars of ``metric``: one group per dataset, one bar (mean, std whisker) per method.

    Args:
        summary: output of :func:`stackmff.report.tables.summarize`.
        metric: metric name.
        path: PNG to write.
    """
    part = summary[summary["metric"] == metric]
    if part.empty:
        return None
    datasets = sorted(part["dataset"].unique())
    methods = sorted(part["method"].unique())
    colors = _colors(methods)
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 + 0.5 * len(datasets) * len(methods) * 0.6), 3.6))
    x = np.arange(len(datasets))
    for i, m in enumerate(methods):
        rows = part[part["method"] == m].set_index("dataset").reindex(datasets)
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            rows["mean"],
            width,
            yerr=rows["std"],
            capsize=2,
            label=m,
            color=colors[m],
        )
    ax.set_xticks(x, datasets)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per dataset (mean ± std over scenes)")
    ax.legend(fontsize=7, ncol=2, frameon=False, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
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
