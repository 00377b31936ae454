"""Flow ``benchmark``: fuse -> evaluate -> report, fanned out over methods × benchmarks (mirrors the DVC stages).

Tasks call the stage ``run()`` functions and pass paths, never images. Fusion and evaluation are deterministic
compute, so they get timeouts, not retries (a failure repeats); only I/O retries: reading the params file and
publishing the artifacts to the Prefect API. Each fuse/evaluate task logs its timing (stacks, seconds per stack,
peak memory). The flow publishes two artifacts, visible in the UI under the flow run and under their keys:
``benchmark-headline`` (table: PSNR/SSIM per dataset and method, the primary metric where there is no ground truth)
and ``benchmark-report`` (Markdown: a link to ``reports/index.html`` and to the tables), and returns a
:class:`BenchmarkResult`-shaped dict (report path, headline numbers, per-method status and timing).

Run once::

    python -m pipelines.flows.benchmark
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.exceptions import MissingContextError

from pipelines.config import load_params
from pipelines.flows._runner import task_runner
from pipelines.paths import load_paths
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import fuse as fuse_stage
from pipelines.stages import report as report_stage


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger (shipped to the Prefect API); a plain logger when called as ``task.fn``."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("stackmff.flows.benchmark")


@task(retries=2, retry_delay_seconds=[1, 5], task_run_name="load params {section}")
def load_section(params_file: str, section: str):
    return load_params(params_file, section)


@task(task_run_name="fuse {method} on {benchmark}", timeout_seconds=3600, cache_result_in_memory=False)
def fuse(params, method: str, benchmark: str, root: str, *, kind: str) -> str:
    """Fuse one benchmark with one method; returns the runs JSON path. Kind ``upstream``: ``method`` is
    ``<learned method>_upstream``, the learned method's checkpoint through the upstream preset (stage fuse_upstream)."""
    p = load_paths(root)
    runs = p.runs_json(method, benchmark)
    base = method.removesuffix("_upstream") if kind == "upstream" else method
    t0 = time.perf_counter()
    summary = fuse_stage.run(
        params,
        base,
        p.benchmark(benchmark),
        p.fused_dir(method, benchmark),
        runs,
        weights=p.model(base) if kind in ("learned", "upstream") else None,
        imported=p.imported if kind == "imported" else None,
        label=method if kind == "upstream" else None,
    )
    _log().info("%s", timing_line(summary, time.perf_counter() - t0))
    return str(runs)


@task(task_run_name="evaluate {method} on {benchmark}", timeout_seconds=3600, cache_result_in_memory=False)
def evaluate(params, method: str, benchmark: str, root: str, runs_json: str) -> str:
    """Score one fused folder; returns the tidy CSV path (``runs_json`` orders it after its fuse task)."""
    p = load_paths(root)
    out = p.metrics_csv(method, benchmark)
    t0 = time.perf_counter()
    df = evaluate_stage.run(params, method, p.benchmark(benchmark), p.fused_dir(method, benchmark), out)
    scenes = df[["dataset", "scene"]].drop_duplicates().shape[0] if len(df) else 0
    _log().info(
        "evaluate %s on %s: %d values on %d scenes in %.1f s",
        method,
        benchmark,
        len(df),
        scenes,
        time.perf_counter() - t0,
    )
    return str(out)


@task(task_run_name="report", timeout_seconds=1800)
def report(params, root: str, tables: list[str]) -> dict:
    """Build the report from everything evaluated; returns ``{"html": path, "headline": {dataset: {method: ...}}}``."""
    p = load_paths(root)
    head = report_stage.run(params, p.metrics, p.runs, p.fused, p.benchmarks, p.reports)
    return {"html": str(p.reports / "index.html"), "headline": head}


def timing_line(summary: dict[str, Any], wall: float) -> str:
    """One log line from a fuse runs summary: stacks, seconds per stack, peak memory (or why nothing ran).

    Examples:
        >>> timing_line({"method": "m", "benchmark": "b", "status": "ok",
        ...              "scenes": [{"seconds": 1.0, "peak_mb": 50}, {"seconds": 3.0, "peak_mb": 80}]}, 4.5)
        'fuse m on b: 2 stacks, 2.00 s/stack (max 3.00), peak 80 MiB, 4.5 s wall'
    """
    head = f"fuse {summary.get('method')} on {summary.get('benchmark')}"
    scenes = summary.get("scenes") or []
    secs = [float(s["seconds"]) for s in scenes if s.get("seconds") is not None]
    if not secs:
        return f"{head}: {summary.get('status')}, no stack fused, {wall:.1f} s wall"
    peaks = [float(s["peak_mb"]) for s in scenes if s.get("peak_mb") is not None]
    peak = f", peak {max(peaks):.0f} MiB" if peaks else ""
    return (
        f"{head}: {len(secs)} stacks, {sum(secs) / len(secs):.2f} s/stack (max {max(secs):.2f}){peak}, "
        f"{wall:.1f} s wall"
    )


def headline_rows(headline: dict[str, dict[str, dict[str, float]]]) -> list[dict[str, Any]]:
    """Rows of the headline table artifact: one per dataset and method, one column per headline metric.

    Examples:
        >>> headline_rows({"d": {"a": {"psnr": 31.2, "ssim": 0.9}}, "nogt": {"a": {"qabf": 0.6}}})
        [{'dataset': 'd', 'method': 'a', 'psnr': 31.2, 'ssim': 0.9, 'qabf': None}, {'dataset': 'nogt', 'method': 'a', 'psnr': None, 'ssim': None, 'qabf': 0.6}]
    """
    cols = list(dict.fromkeys(k for methods in headline.values() for v in methods.values() for k in v))
    return [
        {"dataset": d, "method": m, **{c: v.get(c) for c in cols}}
        for d, methods in headline.items()
        for m, v in methods.items()
    ]


@task(retries=3, retry_delay_seconds=[2, 10, 30], task_run_name="publish artifacts")
def publish(result: dict) -> list[str]:
    """The headline table and a link to the report as Prefect artifacts; retried (the API may be briefly away)."""
    html = Path(result["report"])
    tables = html.parent / "tables"
    table = create_table_artifact(
        key="benchmark-headline",
        table=headline_rows(result["headline"]),
        description="Headline metrics (mean over scenes); full tables in reports/tables/quality.md",
    )
    lines = [
        "# StackMFF benchmark",
        "",
        f"- HTML report (self-contained, flip/wipe viewer per scene): [{html}]({html.as_uri()})",
        f"- Tables: [{tables / 'quality.md'}]({(tables / 'quality.md').as_uri()}), "
        f"[{tables / 'resources.md'}]({(tables / 'resources.md').as_uri()})",
        "",
        "| method | benchmark | status | stacks | s / stack |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for m, per in result["methods"].items():
        for b, info in per.items():
            sps = f"{info['seconds_per_stack']:.2f}" if info["seconds_per_stack"] is not None else "–"
            lines.append(f"| {m} | {b} | {info['status']} | {info['stacks']} | {sps} |")
    link = create_markdown_artifact(
        key="benchmark-report", markdown="\n".join(lines) + "\n", description="Where the benchmark report is"
    )
    return [str(table), str(link)]


def _method_status(runs_json: str) -> dict[str, Any]:
    import json

    with open(runs_json, encoding="utf-8") as f:
        run = json.load(f)
    secs = [float(s["seconds"]) for s in run.get("scenes") or [] if s.get("seconds") is not None]
    return {
        "status": run.get("status"),
        "stacks": len(secs),
        "seconds_per_stack": sum(secs) / len(secs) if secs else None,
        "runs": runs_json,
    }


@flow(name="benchmark", log_prints=True)
def benchmark(params_file: str = "params.yaml", root: str = ".", methods: list[str] | None = None) -> dict:
    """Fuse every configured method on every benchmark, evaluate, build the report under ``root``, publish artifacts.

    Args:
        params_file: the params file (sections fuse, evaluate, report, flows).
        root: repository root holding ``data/`` and ``reports/``.
        methods: restrict to these method names (default: all of fuse.methods, fuse.learned, the
            ``<method>_upstream`` of fuse.upstream, fuse.imported).

    Returns:
        ``{"report": absolute path of reports/index.html, "headline": {dataset: {method: {metric: mean}}},
        "methods": {method: {benchmark: {"status", "stacks", "seconds_per_stack", "runs"}}}, "artifacts": [ids]}``.
    """
    fp = load_section(params_file, "fuse")
    ep = load_section(params_file, "evaluate")
    rp = load_section(params_file, "report")
    jobs = [(m, "registered") for m in fp.methods] + [(m, "learned") for m in fp.learned]
    jobs += [(f"{m}_upstream", "upstream") for m in fp.upstream] + [(m, "imported") for m in fp.imported]
    if methods:
        jobs = [j for j in jobs if j[0] in set(methods)]
    fused = {(m, b): fuse.submit(fp, m, b, root, kind=k) for m, k in jobs for b in fp.benchmarks}
    scored = [evaluate.submit(ep, m, b, root, fut) for (m, b), fut in fused.items()]
    built = report(rp, root, [s.result() for s in scored])
    status: dict[str, dict[str, Any]] = {}
    for (m, b), fut in fused.items():
        status.setdefault(m, {})[b] = _method_status(fut.result())
    result = {"report": built["html"], "headline": built["headline"], "methods": status}
    result["artifacts"] = publish(result)
    return result


def _runner_flow():
    fl = load_params("params.yaml", "flows")
    return benchmark.with_options(task_runner=task_runner(fl))


if __name__ == "__main__":
    _runner_flow()()
