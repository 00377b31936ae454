"""Flow ``benchmark``: fuse -> evaluate -> report, fanned out over methods × benchmarks (mirrors the DVC stages).

Tasks call the stage ``run()`` functions and pass paths, never images. Fusion and evaluation are deterministic
compute, so they get timeouts, not retries; only reading the params file (I/O) retries.

Run once::

    python -m pipelines.flows.benchmark
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from pipelines.config import load_params
from pipelines.flows._runner import task_runner
from pipelines.stages import evaluate as evaluate_stage
from pipelines.stages import fuse as fuse_stage
from pipelines.stages import report as report_stage

BENCHMARKS = Path("data/benchmarks")
FUSED = Path("data/fused")
RUNS = Path("reports/runs")
METRICS = Path("reports/metrics")
REPORTS = Path("reports")
MODELS = Path("models")
IMPORTED = Path("data/imported")


@task(retries=2, retry_delay_seconds=[1, 5], task_run_name="load params {section}")
def load_section(params_file: str, section: str):
    return load_params(params_file, section)


@task(task_run_name="fuse {method} on {benchmark}", timeout_seconds=3600, cache_result_in_memory=False)
def fuse(params, method: str, benchmark: str, root: str, *, kind: str) -> str:
    """Fuse one benchmark with one method; returns the runs JSON path."""
    r = Path(root)
    runs = r / RUNS / method / f"{benchmark}.json"
    fuse_stage.run(
        params,
        method,
        r / BENCHMARKS / benchmark,
        r / FUSED / method / benchmark,
        runs,
        weights=r / MODELS / method / "model.pt" if kind == "learned" else None,
        imported=r / IMPORTED if kind == "imported" else None,
    )
    return str(runs)


@task(task_run_name="evaluate {method} on {benchmark}", timeout_seconds=3600, cache_result_in_memory=False)
def evaluate(params, method: str, benchmark: str, root: str, runs_json: str) -> str:
    """Score one fused folder; returns the tidy CSV path (``runs_json`` orders it after its fuse task)."""
    r = Path(root)
    out = r / METRICS / method / f"{benchmark}.csv"
    evaluate_stage.run(params, method, r / BENCHMARKS / benchmark, r / FUSED / method / benchmark, out)
    return str(out)


@task(task_run_name="report", timeout_seconds=1800)
def report(params, root: str, tables: list[str]) -> str:
    """Build the report from everything evaluated; returns the HTML path."""
    r = Path(root)
    report_stage.run(params, r / METRICS, r / RUNS, r / FUSED, r / BENCHMARKS, r / REPORTS)
    return str(r / REPORTS / "index.html")


@flow(name="benchmark", log_prints=True)
def benchmark(params_file: str = "params.yaml", root: str = ".", methods: list[str] | None = None) -> str:
    """Fuse every configured method on every benchmark, evaluate, and build the report under ``root``.

    Args:
        params_file: the params file (sections fuse, evaluate, report, flows).
        root: repository root holding ``data/`` and ``reports/``.
        methods: restrict to these method names (default: all of fuse.methods, fuse.learned, fuse.imported).

    Returns:
        Path of ``reports/index.html``.
    """
    fp = load_section(params_file, "fuse")
    ep = load_section(params_file, "evaluate")
    rp = load_section(params_file, "report")
    jobs = [(m, "registered") for m in fp.methods] + [(m, "learned") for m in fp.learned]
    jobs += [(m, "imported") for m in fp.imported]
    if methods:
        jobs = [j for j in jobs if j[0] in set(methods)]
    fused = {(m, b): fuse.submit(fp, m, b, root, kind=k) for m, k in jobs for b in fp.benchmarks}
    scored = [evaluate.submit(ep, m, b, root, fut) for (m, b), fut in fused.items()]
    return report(rp, root, [s.result() for s in scored])


def _runner_flow():
    fl = load_params("params.yaml", "flows")
    return benchmark.with_options(task_runner=task_runner(fl))


if __name__ == "__main__":
    _runner_flow()()
