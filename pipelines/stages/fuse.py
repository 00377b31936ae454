"""Stage ``fuse``: fuse every scene of one benchmark with one method; record time and peak memory per scene.

A thin caller of :func:`stackmff.benchmark.fuse_tree` (the code behind ``stackmff fuse-dataset``): the method is an
imported result (``--imported``), an external tool or a registered method; learned methods get ``--weights``.
Outputs: ``<out>/<dataset>/<scene>.png`` (+ ``index_maps/`` when ``fuse.index_maps``) and the runs JSON (the run
summary: method, kind, status ``ok``/``partial``/``absent``, tool version, one record per scene). A tool that is not
installed, or an imported method without results, is reported ``absent`` (empty output folder), never an error.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.fuse --params params.yaml --method focus_measure \
        data/benchmarks/samples data/fused/focus_measure/samples reports/runs/focus_measure/samples.json
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.config import FuseParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff._memory import tune_malloc
from stackmff.benchmark import fuse_tree, method_kind

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.fuse")


def run(
    params: FuseParams,
    method: str,
    benchmark: str | Path,
    out: str | Path,
    runs: str | Path,
    *,
    weights: str | Path | None = None,
    imported: str | Path | None = None,
    label: str | None = None,
) -> dict[str, Any]:
    """Fuse ``benchmark`` with ``method`` into ``out`` (replacing what is there); write the run summary to ``runs``.

    ``params.align[<benchmark folder name>]`` picks the alignment, ``params.options[label or method]`` the options
    (``weights`` added for learned methods); ``label`` names the run (a registered method with other options, e.g.
    ``stackmff_v3_upstream``).
    """
    options = dict(params.options.get(label or method, {}))
    if weights is not None and method_kind(method, imported=imported) == "registered":
        options.setdefault("weights", str(weights))
    Path(out).mkdir(parents=True, exist_ok=True)  # DVC needs the folder, also when the method is absent
    summary = fuse_tree(
        benchmark,
        out,
        method,
        align=params.align.get(Path(benchmark).name, "none"),
        method_options=options,
        index_maps=params.index_maps,
        imported=imported,
        label=label,
        overwrite=True,
    )
    write_json(runs, summary)
    return summary


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("fuse", "Fuse every scene of one benchmark with one method.")
    p.add_argument("--method", required=True, help="registered method, external tool or imported method name")
    p.add_argument("--weights", help="trained checkpoint for learned methods")
    p.add_argument("--imported", help="results root <results>/<method>/<dataset>/<scene>.<ext> (imported methods)")
    p.add_argument("--as", dest="label", help="report the run under this name (options from fuse.options.<name>)")
    p.add_argument("benchmark", help="benchmark tree")
    p.add_argument("out", help="output folder of fused images")
    p.add_argument("runs", help="runs JSON (runtime, memory, status)")
    a = p.parse_args(argv)
    params = load_params(a.params, "fuse")
    s = run(params, a.method, a.benchmark, a.out, a.runs, weights=a.weights, imported=a.imported, label=a.label)
    log.info("%s on %s: %s (%d scenes)", s["method"], Path(a.benchmark).name, s["status"], len(s["scenes"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    tune_malloc()  # this stage's own process: large arrays per band are reused (stackmff._memory.tune_malloc)
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
