"""Stage ``report``: tables, plots and the HTML page from all evaluated methods and benchmarks.

Reads every ``<metrics>/<method>/<benchmark>.csv`` (tidy) and ``<runs>/<method>/<benchmark>.json`` and writes, in
``<out>``:

- ``tables/quality.{md,tex,csv}``: methods × metrics per dataset, mean ± std, best in bold;
- ``tables/resources.{md,tex,csv}``: runtime per stack and peak memory per method;
- ``plots/*.png``: metric means, paired per-scene differences against ``report.default_method``, quality vs
  runtime, quality vs N;
- ``plots/dvc/{means,paired}/<dataset>.<metric>.json``: the data of the headline plots, for ``dvc plots``;
- ``index.html``: everything above plus a flip/wipe viewer of fused images and index maps per scene, self-contained;
- ``summary/<dataset>/<method>.json``: the headline numbers (``report.headline``, e.g. PSNR and SSIM; the dataset's
  primary metric where it has none of them), declared as DVC metrics: one file per row of ``dvc metrics show``,
  so the table stays a few columns wide.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.report --params params.yaml reports/metrics reports/runs data/fused data/benchmarks reports
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from pipelines.config import ReportParams, load_params
from pipelines.stages._common import parser, read_json, run_main, write_json
from stackmff.benchmark import find_scenes
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, atomic_folder, natural_key
from stackmff.report import (
    SceneView,
    build_html,
    headline,
    metric_tables,
    paired_differences,
    plot_metric_bars,
    plot_paired_differences,
    plot_quality_vs_n,
    plot_quality_vs_runtime,
    read_runs,
    read_tidy,
    resource_table,
    summarize,
    to_latex,
    to_markdown,
    write_csv,
    write_text,
)

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.report")


def _primary(params: ReportParams, dataset: str, available: Sequence[str]) -> str | None:
    for key in (dataset, "default"):
        m = params.primary.get(key)
        if m in available:
            return m
    return available[0] if available else None


def _write_headline(head: dict, folder: Path) -> None:
    """One JSON per dataset and method under ``folder`` (replaced as a whole: no file of a removed method stays)."""
    with atomic_folder(folder, overwrite=True) as tmp:
        for dataset, methods in head.items():
            for method, values in methods.items():
                write_json(tmp / dataset / f"{method}.json", values)


def _write_plot_data(head: dict, tidy: pd.DataFrame, reference: str, folder: Path) -> dict[str, pd.DataFrame]:
    """Data files of the ``dvc plots`` definitions; returns dataset -> paired differences of its first headline metric.

    ``means/<dataset>.<metric>.json``: ``[{method, mean}]`` per headline metric; ``paired/<dataset>.<metric>.json``:
    ``[{method, scene, delta}]``, per-scene ``method - reference`` (only when the reference method was evaluated).
    """
    shutil.rmtree(folder, ignore_errors=True)
    paired: dict[str, pd.DataFrame] = {}
    for dataset, methods in head.items():
        metrics = list(dict.fromkeys(k for v in methods.values() for k in v))
        for metric in metrics:
            rows = [{"method": m, "mean": v[metric]} for m, v in methods.items() if metric in v]
            write_json(folder / "means" / f"{dataset}.{metric}.json", rows)
        if not metrics:
            continue
        diff = paired_differences(tidy[tidy["dataset"] == dataset], reference, metrics[0])
        if diff.empty:
            continue
        paired[dataset] = diff.assign(metric=metrics[0])
        rows = [{"method": r.method, "scene": r.scene, "delta": round(float(r.delta), 4)} for r in diff.itertuples()]
        write_json(folder / "paired" / f"{dataset}.{metrics[0]}.json", rows)
    return paired


# the no-reference blur check (metrics/blur_check.py), shown under the crops of scenes without a ground truth
BLUR_CHECK = {
    "sharpness_ratio": "sharpness {:.2f}",
    "blurred_share": "blurred {:.0%}",
    "ghost_share": "extra edges {:.0%}",
}


def _blur_captions(tidy: pd.DataFrame, dataset: str, scene: str) -> dict[str, str]:
    """method -> "sharpness 0.97 · blurred 1% · extra edges 0%" for one scene (empty when not evaluated)."""
    if tidy.empty:
        return {}
    sel = tidy[(tidy["dataset"] == dataset) & (tidy["scene"].astype(str) == scene) & tidy["metric"].isin(BLUR_CHECK)]
    out = {}
    for method, g in sel.groupby("method"):
        vals = dict(zip(g["metric"], g["value"], strict=False))
        parts = [fmt.format(vals[k]) for k, fmt in BLUR_CHECK.items() if k in vals and vals[k] == vals[k]]
        if parts:
            out[str(method)] = " · ".join(parts)
    return out


def _scene_views(
    runs: pd.DataFrame, fused: Path, benchmarks: Path, params: ReportParams, tidy: pd.DataFrame | None = None
) -> list[SceneView]:
    """Pick up to ``params.max_scenes`` scenes, round-robin over datasets, with every method's image; scenes without
    a ground truth (real stacks) carry the blur-check numbers of every method under its crop."""
    ok = runs[(runs["scene_status"] == "ok") & runs["scene"].notna()] if "scene_status" in runs else runs.iloc[0:0]
    keys = ok.drop_duplicates(["benchmark", "dataset", "scene"])[["benchmark", "dataset", "scene", "layers"]]
    by_ds: dict[tuple[str, str], list] = {}
    for row in keys.itertuples(index=False):
        by_ds.setdefault((row.benchmark, row.dataset), []).append(row)
    picked = []
    while len(picked) < params.max_scenes and any(by_ds.values()):
        for k in sorted(by_ds):
            if by_ds[k] and len(picked) < params.max_scenes:
                picked.append(by_ds[k].pop(0))
    gts: dict[str, dict[tuple[str, str], Path | None]] = {}
    stacks: dict[str, dict[tuple[str, str], Path]] = {}
    views = []
    for row in picked:
        if row.benchmark not in gts:
            try:
                found = find_scenes(benchmarks / row.benchmark, kinds=("stack",))
            except StackMFFError:
                found = []
            gts[row.benchmark] = {(s.dataset, s.scene): s.ground_truth for s in found}
            stacks[row.benchmark] = {(s.dataset, s.scene): s.inputs[0] for s in found}
        methods = ok[(ok["benchmark"] == row.benchmark) & (ok["dataset"] == row.dataset) & (ok["scene"] == row.scene)]
        images, maps = {}, {}
        for m in sorted(methods["method"].unique()):
            base = fused / m / row.benchmark / row.dataset
            img = base / f"{row.scene}.png"
            if img.is_file():
                images[m] = img
            imap = base / "index_maps" / f"{row.scene}_preview.png"
            if imap.is_file():
                maps[m] = imap
        layers = int(row.layers) if row.layers == row.layers else None
        stack = stacks[row.benchmark].get((row.dataset, str(row.scene)))
        sources = (
            sorted((p for p in stack.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
            if stack
            else []
        )
        gt = gts[row.benchmark].get((row.dataset, str(row.scene)))
        captions = _blur_captions(tidy, row.dataset, str(row.scene)) if gt is None and tidy is not None else {}
        views.append(
            SceneView(row.dataset, str(row.scene), images, maps, gt, layers, captions=captions, sources=sources)
        )
    return views


def run(
    params: ReportParams,
    metrics_dir: str | Path,
    runs_dir: str | Path,
    fused_dir: str | Path,
    benchmarks_dir: str | Path,
    out: str | Path,
) -> dict:
    """Build every report output under ``out``; returns the headline numbers (``{dataset: {method: {metric: mean}}}``)
    written to ``summary/``."""
    metrics_dir, runs_dir, fused_dir, out = Path(metrics_dir), Path(runs_dir), Path(fused_dir), Path(out)
    csvs = sorted(metrics_dir.glob("*/*.csv"))
    jsons = sorted(runs_dir.glob("*/*.json"))
    if not jsons:
        raise StackMFFError(f"no runs JSON under {runs_dir}; run the fuse stages first (dvc repro)")
    tidy = read_tidy(csvs)
    runs = read_runs(jsons)
    summary = summarize(tidy)
    lower = set(params.lower_is_better)
    tables = metric_tables(summary, metrics=params.metrics or None, lower_is_better=lower)
    resources = resource_table(runs)

    tdir = out / "tables"
    write_text(tdir / "quality.md", f"# {params.title}\n\n" + "\n".join(to_markdown(t) for t in tables))
    write_text(tdir / "quality.tex", "\n".join(to_latex(t) for t in tables))
    write_csv(summary, tdir / "quality.csv")
    write_text(tdir / "resources.md", to_markdown(resources))
    write_text(tdir / "resources.tex", to_latex(resources))
    write_csv(resources.cells.rename_axis("method").reset_index(), tdir / "resources.csv")

    shown = params.metrics or sorted(summary["metric"].unique())
    fallback = {}
    for dataset in sorted(summary["dataset"].unique()):
        available = [m for m in shown if m in set(summary[summary["dataset"] == dataset]["metric"])]
        fallback[dataset] = _primary(params, dataset, available)
    head = headline(summary, params.headline, {d: m for d, m in fallback.items() if m})

    pdir = out / "plots"
    plots: dict[str, Path] = {}
    paired = _write_plot_data(head, tidy, params.default_method, pdir / "dvc")
    for metric in shown:
        p = plot_metric_bars(summary, metric, pdir / f"bars_{metric}.png")
        if p:
            plots[f"{metric} per dataset"] = p
    if paired:
        diffs = pd.concat(paired.values(), ignore_index=True)
        for metric in sorted(diffs["metric"].unique()):
            part = diffs[diffs["metric"] == metric]
            p = plot_paired_differences(part, metric, params.default_method, pdir / f"paired_{metric}.png")
            if p:
                plots[f"{metric}: per-scene difference to {params.default_method}"] = p
    for dataset in sorted(summary["dataset"].unique()):
        available = [m for m in shown if m in set(summary[summary["dataset"] == dataset]["metric"])]
        metric = _primary(params, dataset, available)
        if metric is None:
            continue
        p = plot_quality_vs_runtime(summary, runs, metric, pdir / f"runtime_{dataset}.png", dataset=dataset)
        if p:
            plots[f"{dataset}: {metric} vs runtime"] = p
        p = plot_quality_vs_n(tidy, runs, metric, pdir / f"layers_{dataset}.png", dataset=dataset)
        if p:
            plots[f"{dataset}: {metric} vs N"] = p

    notes = []
    grid = out / "bench" / "grid.json"  # stage bench: the whole-command grid (pipelines/benchmarks/grid.py)
    if grid.is_file():
        bench = read_json(grid)
        mach = bench.get("machine", {})
        gpu = mach.get("gpu")  # V3 then has GPU rows too (device "cuda", with its GPU memory)
        gpu_text = f", GPU {gpu.get('name', '?')} ({gpu.get('memory_mb', '?')} MB)" if gpu else ", no GPU"
        notes.append(
            f"Speed and memory grid (whole `stackmff fuse` commands, default flags, start-up included): "
            f"{mach.get('cpu', '?')}, {mach.get('affinity', mach.get('cpu_count', '?'))} cores, "
            f"{mach.get('mem_total_gb', '?')} GB{gpu_text}; load average {mach.get('loadavg')} before, "
            f"{mach.get('loadavg_after')} after; table in bench/grid.json."
        )
        for v in bench.get("versus", []):  # the peers' time over ours, per cell of the same run
            said = []
            if "openfocus_over_v3_wall" in v:  # OpenFocus installed (else only enfuse / focus-stack may be)
                said.append(f"OpenFocus / V3 wall {v['openfocus_over_v3_wall']}x, CPU {v['openfocus_over_v3_cpu']}x")
            for peer, label in (("focus_stack", "focus-stack"), ("enfuse", "enfuse")):
                if f"{peer}_over_classical_wall" in v:
                    said.append(f"{label} / {v['fastest_classical']} wall {v[f'{peer}_over_classical_wall']}x")
            notes.append(f"Peers over ours, N = {v['layers']} at {v['megapixels']:g} MP, same run: {'; '.join(said)}.")
        for name, caption in (("grid_vs_n.png", "whole command vs N"), ("grid_vs_mp.png", "whole command vs MP")):
            if (grid.parent / name).is_file():
                plots[f"speed/memory grid: {caption}"] = grid.parent / name
    heads = runs.drop_duplicates(["method", "benchmark"])
    absent: dict[str, str] = {}
    for r in heads.itertuples(index=False):
        if r.status == "absent":
            where = absent.get(r.method, "absent on") + ("," if r.method in absent else "")
            absent[r.method] = f"{where} {r.benchmark}"
    build_html(
        out / "index.html",
        title=params.title,
        tables=tables,
        resources=resources,
        plots=plots,
        scenes=_scene_views(runs, fused_dir, Path(benchmarks_dir), params, tidy),
        absent=absent,
        notes=notes,
        crop=params.crop,
        default_method=params.default_method,
    )
    _write_headline(head, out / "summary")
    log.info("report: %d tables, %d plots, %d absent methods", len(tables), len(plots), len(absent))
    return head


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("report", "Build tables, plots and the HTML report.")
    p.add_argument("metrics", help="folder of <method>/<benchmark>.csv tidy tables")
    p.add_argument("runs", help="folder of <method>/<benchmark>.json runs files")
    p.add_argument("fused", help="folder of <method>/<benchmark>/<dataset>/<scene>.png")
    p.add_argument("benchmarks", help="folder of benchmark trees (ground truth for the crops)")
    p.add_argument("out", help="report folder (index.html, tables/, plots/, summary/)")
    a = p.parse_args(argv)
    run(load_params(a.params, "report"), a.metrics, a.runs, a.fused, a.benchmarks, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
