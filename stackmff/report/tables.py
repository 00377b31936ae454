"""Benchmark tables from a tidy metrics table: mean ± std per method × dataset × metric, best in bold.

Input vocabulary:

- a *tidy* table has one row per measured value, columns :data:`TIDY_COLUMNS`
  (``method, dataset, scene, metric, value``), as written by the evaluate stage;
- a *runs* table has one row per fused stack, columns :data:`RUN_COLUMNS`, from the fuse stage's runs JSON files.

Outputs are Markdown (GitHub pipe tables), LaTeX (``booktabs`` tabular, ``\\textbf`` for the best) and CSV.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import StackMFFError
from ..io import atomic_write

__all__ = [
    "RUN_COLUMNS",
    "TIDY_COLUMNS",
    "Table",
    "check_tidy",
    "headline",
    "metric_tables",
    "paired_differences",
    "read_runs",
    "read_tidy",
    "resource_table",
    "summarize",
    "to_latex",
    "to_markdown",
    "write_csv",
    "write_text",
]

TIDY_COLUMNS = ("method", "dataset", "scene", "metric", "value")
RUN_COLUMNS = (
    "method",
    "kind",
    "benchmark",
    "status",
    "version",
    "dataset",
    "scene",
    "layers",
    "height",
    "width",
    "seconds",
    "peak_mb",
)


def check_tidy(df: pd.DataFrame, name: str = "metrics") -> None:
    """Raise :class:`StackMFFError` unless ``df`` has the tidy columns."""
    missing = [c for c in TIDY_COLUMNS if c not in df.columns]
    if missing:
        raise StackMFFError(f"{name} must have columns {', '.join(TIDY_COLUMNS)}; missing {', '.join(missing)}")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically (temp file in the same folder, then rename); creates the folder."""
    path = Path(path)
    with atomic_write(path, mode="w", overwrite=True) as f:
        f.write(text)
    return path


def write_csv(df: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``df`` as CSV atomically (no index)."""
    return write_text(path, df.to_csv(index=False))


def read_tidy(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate tidy CSV files (empty files of absent methods are fine)."""
    frames = []
    for p in paths:
        df = pd.read_csv(p, dtype={"scene": str, "dataset": str, "method": str, "metric": str})
        check_tidy(df, str(p))
        frames.append(df.loc[:, list(TIDY_COLUMNS)])
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "value" else object) for c in TIDY_COLUMNS})
    out = pd.concat(frames, ignore_index=True)
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out


def read_runs(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Flatten runs JSON files of the fuse stage into one row per stack (absent methods: one row, no scene)."""
    rows = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            run = json.load(f)
        head = {k: run.get(k) for k in ("method", "kind", "benchmark", "status", "version")}
        scenes = run.get("scenes") or []
        if not scenes:
            rows.append(head)
        for sc in scenes:
            row = dict(head)
            # the run names the method (a labelled run, e.g. stackmff_v3_upstream, fuses with its base method)
            row.update({k: sc.get(k) for k in RUN_COLUMNS if k in sc and k not in ("status", *head)})
            row["scene_status"] = sc.get("status")
            rows.append(row)
    df = pd.DataFrame(rows)
    for c in RUN_COLUMNS:
        if c not in df.columns:
            df[c] = np.nan
    for c in ("layers", "height", "width", "seconds", "peak_mb"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; 0 for one scene) and count per ``method, dataset, metric``.

    Args:
        df: tidy table.

    Returns:
        DataFrame with columns ``method, dataset, metric, mean, std, n`` (NaN values are left out of all three).

    Examples:
        >>> t = pd.DataFrame({"method": ["a", "a"], "dataset": ["d", "d"], "scene": ["1", "2"],
        ...                   "metric": ["psnr", "psnr"], "value": [30.0, 32.0]})
        >>> summarize(t)[["mean", "std", "n"]].values.tolist()
        [[31.0, 1.4142135623730951, 2.0]]
    """
    check_tidy(df)
    d = df.dropna(subset=["value"])
    g = d.groupby(["method", "dataset", "metric"], sort=True)["value"]
    out = g.agg(["mean", "std", "count"]).reset_index().rename(columns={"count": "n"})
    out["std"] = out["std"].fillna(0.0)
    out["n"] = out["n"].astype(float)
    return out


def headline(
    summary: pd.DataFrame, metrics: Sequence[str], fallback: dict[str, str] | None = None, *, digits: int = 4
) -> dict[str, dict[str, dict[str, float]]]:
    """The few numbers a reader compares first: ``{dataset: {method: {metric: mean}}}``.

    Per dataset, the ``metrics`` it has (e.g. PSNR and SSIM against the ground truth); a dataset with none of them
    (no ground truth) gets ``fallback[dataset]`` instead (e.g. a no-reference score), when it has that one.

    Args:
        summary: output of :func:`summarize`.
        metrics: headline metrics, in order.
        fallback: dataset -> metric used where none of ``metrics`` exists.
        digits: decimals kept (the full precision stays in the tables).

    Examples:
        >>> s = pd.DataFrame({"method": ["a", "a", "a"], "dataset": ["gt", "gt", "nogt"],
        ...                   "metric": ["psnr", "qabf", "qabf"], "mean": [31.23456, 0.5, 0.61234],
        ...                   "std": [0.0] * 3, "n": [2.0] * 3})
        >>> headline(s, ["psnr", "ssim"], {"nogt": "qabf"})
        {'gt': {'a': {'psnr': 31.2346}}, 'nogt': {'a': {'qabf': 0.6123}}}
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for dataset, part in summary.groupby("dataset", sort=True):
        have = set(part["metric"])
        chosen = [m for m in metrics if m in have]
        if not chosen and fallback and fallback.get(str(dataset)) in have:
            chosen = [fallback[str(dataset)]]
        for r in part[part["metric"].isin(chosen)].itertuples(index=False):
            if r.mean == r.mean:
                out.setdefault(str(dataset), {}).setdefault(str(r.method), {})[str(r.metric)] = round(
                    float(r.mean), digits
                )
        for methods in out.get(str(dataset), {}).values():  # metric order as asked, not alphabetical
            ordered = {m: methods[m] for m in chosen if m in methods}
            methods.clear()
            methods.update(ordered)
    return out


def paired_differences(tidy: pd.DataFrame, reference: str, metric: str) -> pd.DataFrame:
    """Per-scene differences ``method - reference`` of ``metric``, on the scenes both methods have.

    Paired differences show what means ± std hide: a method 0.3 dB behind on every scene is consistently worse,
    even when the spread over scenes is 2 dB.

    Args:
        tidy: tidy table (:data:`TIDY_COLUMNS`).
        reference: the method the others are compared against (it is left out of the result).
        metric: metric name.

    Returns:
        Columns ``dataset, scene, method, value, reference, delta``, sorted; empty when ``reference`` has no values.

    Examples:
        >>> t = pd.DataFrame({"method": ["r", "r", "a", "a"], "dataset": ["d"] * 4, "scene": ["1", "2", "1", "2"],
        ...                   "metric": ["psnr"] * 4, "value": [30.0, 32.0, 29.5, 31.0]})
        >>> paired_differences(t, "r", "psnr")["delta"].tolist()
        [-0.5, -1.0]
    """
    check_tidy(tidy)
    cols = ["dataset", "scene", "method", "value", "reference", "delta"]
    t = tidy[(tidy["metric"] == metric) & tidy["value"].notna()].astype({"scene": str, "dataset": str})
    ref = t[t["method"] == reference][["dataset", "scene", "value"]].rename(columns={"value": "reference"})
    if ref.empty:
        return pd.DataFrame(columns=cols)
    other = t[t["method"] != reference][["dataset", "scene", "method", "value"]]
    out = other.merge(ref.drop_duplicates(["dataset", "scene"]), on=["dataset", "scene"], how="inner")
    out["delta"] = out["value"] - out["reference"]
    return out[cols].sort_values(["dataset", "method", "scene"], ignore_index=True)


@dataclass
class Table:
    """One rendered table: ``cells`` (strings) and ``best`` (bool) share index (rows) and columns.

    Attributes:
        title: caption, e.g. the dataset name.
        cells: DataFrame of display strings.
        best: DataFrame of booleans, True where the cell is the best of its column.
    """

    title: str
    cells: pd.DataFrame
    best: pd.DataFrame


def _fmt(mean: float, std: float, n: float) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n is not None and n > 1:
        return f"{mean:.4g} ± {std:.2g}"
    return f"{mean:.4g}"


def _best_mask(means: pd.DataFrame, lower_is_better: Iterable[str]) -> pd.DataFrame:
    lower = set(lower_is_better)
    best = pd.DataFrame(False, index=means.index, columns=means.columns)
    for col in means.columns:
        metric = col[-1] if isinstance(col, tuple) else col
        values = means[col].astype(float)
        if values.notna().sum() < 2:  # a lone value is not a "best"
            continue
        target = values.min() if metric in lower else values.max()
        best[col] = np.isclose(values, target, rtol=1e-9, atol=0.0) & values.notna()
    return best


def metric_tables(
    summary: pd.DataFrame,
    *,
    metrics: Sequence[str] | None = None,
    lower_is_better: Iterable[str] = (),
    methods: Sequence[str] | None = None,
) -> list[Table]:
    """One table per dataset: rows = methods, columns = metrics, cells ``mean ± std``, best per column in bold.

    Args:
        summary: output of :func:`summarize`.
        metrics: columns in this order (others dropped); default all metrics of the dataset, sorted.
        lower_is_better: metrics where the smallest mean is best (else the largest).
        methods: row order; default sorted names.

    Returns:
        :class:`Table` list, datasets sorted by name.
    """
    tables = []
    for dataset, part in summary.groupby("dataset", sort=True):
        means = part.pivot(index="method", columns="metric", values="mean")
        stds = part.pivot(index="method", columns="metric", values="std")
        ns = part.pivot(index="method", columns="metric", values="n")
        cols = [m for m in metrics if m in means.columns] if metrics else sorted(means.columns)
        rows = [m for m in methods if m in means.index] if methods else sorted(means.index)
        if not cols or not rows:
            continue
        means, stds, ns = (x.reindex(index=rows, columns=cols) for x in (means, stds, ns))
        cells = pd.DataFrame(
            [[_fmt(means.at[r, c], stds.at[r, c], ns.at[r, c]) for c in cols] for r in rows], index=rows, columns=cols
        )
        tables.append(Table(str(dataset), cells, _best_mask(means, lower_is_better)))
    return tables


def resource_table(runs: pd.DataFrame) -> Table:
    """Runtime per stack and peak memory per method (over all benchmarks), plus status and version.

    Columns: ``stacks``, ``seconds / stack`` (mean ± std of the whole scene: load, align, fuse, save), ``megapixel·layers / s``
    (throughput), ``peak MiB`` (largest over stacks), ``status``, ``version``. Fastest and leanest are bold.
    """
    rows, best_cols = [], ("seconds / stack", "peak MiB")
    methods = sorted(runs["method"].dropna().unique())
    means: dict[str, dict[str, float]] = {}
    for m in methods:
        r = runs[runs["method"] == m]
        ok = r[r["seconds"].notna()]
        statuses = sorted(set(r["status"].dropna()))
        version = next((v for v in r["version"].dropna() if v), "")
        sec = ok["seconds"].astype(float)
        mpx = (ok["height"] * ok["width"] * ok["layers"] / 1e6).astype(float)
        thr = float(mpx.sum() / sec.sum()) if len(ok) and sec.sum() > 0 else float("nan")
        peak = float(ok["peak_mb"].max()) if ok["peak_mb"].notna().any() else float("nan")
        means[m] = {"seconds / stack": float(sec.mean()) if len(ok) else float("nan"), "peak MiB": peak}
        rows.append(
            {
                "stacks": str(int(r["scene"].notna().sum())) if "scene" in r else "0",
                "seconds / stack": _fmt(float(sec.mean()), float(sec.std(ddof=1) or 0.0), len(ok)) if len(ok) else "–",
                "megapixel·layers / s": f"{thr:.3g}" if thr == thr else "–",
                "peak MiB": f"{peak:.0f}" if peak == peak else "–",
                "status": ", ".join(statuses),
                "version": str(version),
            }
        )
    cells = pd.DataFrame(rows, index=methods)
    mean_df = pd.DataFrame(means).T.reindex(index=methods)
    best = pd.DataFrame(False, index=methods, columns=cells.columns)
    if len(mean_df):
        sub = _best_mask(mean_df[list(best_cols)], lower_is_better=best_cols)
        for c in best_cols:
            best[c] = sub[c]
    return Table("resources", cells, best)


def _escape_md(s: str) -> str:
    return s.replace("|", "\\|")


def to_markdown(table: Table, *, heading: int = 3) -> str:
    """Render a :class:`Table` as a Markdown section with a pipe table (best cells in ``**bold**``)."""
    cols = list(table.cells.columns)
    lines = [f"{'#' * heading} {table.title}", "", "| method | " + " | ".join(map(str, cols)) + " |"]
    lines.append("| --- | " + " | ".join("---:" for _ in cols) + " |")
    for row in table.cells.index:
        cells = []
        for c in cols:
            v = _escape_md(str(table.cells.at[row, c]))
            cells.append(f"**{v}**" if bool(table.best.at[row, c]) else v)
        lines.append(f"| {_escape_md(str(row))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _escape_tex(s: str) -> str:
    s = "".join(_LATEX_SPECIAL.get(ch, ch) for ch in s)
    return s.replace("±", r"$\pm$").replace("–", "--").replace("·", r"$\cdot$")


def to_latex(table: Table) -> str:
    """Render a :class:`Table` as a ``booktabs`` LaTeX table (best cells in ``\\textbf``)."""
    cols = list(table.cells.columns)
    out = [
        r"\begin{table}[t]",
        r"\centering",
        rf"\caption{{{_escape_tex(table.title)}}}",
        r"\begin{tabular}{l" + "r" * len(cols) + "}",
        r"\toprule",
        "method & " + " & ".join(_escape_tex(str(c)) for c in cols) + r" \\",
        r"\midrule",
    ]
    for row in table.cells.index:
        cells = []
        for c in cols:
            v = _escape_tex(str(table.cells.at[row, c]))
            cells.append(rf"\textbf{{{v}}}" if bool(table.best.at[row, c]) else v)
        out.append(_escape_tex(str(row)) + " & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"
