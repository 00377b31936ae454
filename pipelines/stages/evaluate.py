"""Stage ``evaluate``: score the fused images of one method on one benchmark; write a tidy metrics table.

A thin caller of :func:`stackmff.benchmark.evaluate_tree` (the code behind ``stackmff evaluate``): reference metrics
against ``AiF/`` ground truth where the benchmark has it, no-reference / source-based metrics everywhere; one row per
``method, dataset, scene, metric, value``. A method the fuse stage reported absent (empty folder) gives an empty
table with the same columns.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.evaluate --params params.yaml --method focus_measure \
        data/benchmarks/samples data/fused/focus_measure/samples reports/metrics/focus_measure/samples.csv
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from metrics.evaluate import write_table
from pipelines.config import EvaluateParams, load_params
from pipelines.stages._common import parser, run_main
from stackmff.benchmark import evaluate_tree

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.evaluate")


def run(params: EvaluateParams, method: str, benchmark: str | Path, fused: str | Path, out: str | Path) -> pd.DataFrame:
    """Evaluate ``fused`` (``<dataset>/<scene>.png``) against ``benchmark``; write the tidy table to ``out``."""
    df = evaluate_tree(
        fused,
        benchmark_root=benchmark,
        method=method,
        metrics=params.metrics or None,
        on_size_mismatch=params.on_size_mismatch,
        require_results=False,
    )
    if df.empty:
        log.warning("%s has no fused images (method absent): empty table", fused)
    write_table(df, out, overwrite=True)
    log.info("%s on %s: %d values", method, Path(benchmark).name, len(df))
    return df


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("evaluate", "Score the fused images of one method on one benchmark.")
    p.add_argument("--method", required=True)
    p.add_argument("benchmark", help="benchmark tree (sources and ground truth)")
    p.add_argument("fused", help="fused images <dataset>/<scene>.png")
    p.add_argument("out", help="tidy metrics CSV")
    a = p.parse_args(argv)
    run(load_params(a.params, "evaluate"), a.method, a.benchmark, a.fused, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
