"""Stage ``peers``: what each method of ``fuse.methods`` is on this machine, one small JSON per method.

DVC tracks files, not installed programs: without this stage, installing enfuse after a run would leave
``fuse@enfuse-*`` "up to date" with its ``absent`` result. This stage always runs (``always_changed``, ~0.1 s per
external tool) and writes ``<out>/<method>.json``: ``{"kind": "registered"}`` for a registered method (constant),
``{"kind": "external", "version": ...}`` for an external tool (its version line, ``"absent"`` when not installed).
Each ``fuse@<method>-*`` stage depends on its own file, so only the stages of a tool whose installation changed
re-run; the files' contents do not change between runs otherwise.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.peers --params params.yaml data/peers
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import FuseParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff.benchmark import external_tool, method_kind

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.peers")


def run(params: FuseParams, out: str | Path) -> dict[str, dict]:
    """Write ``<out>/<method>.json`` for every method of ``params.methods``; return them by method.

    Raises:
        StackMFFError: an unknown method name (one line, listing the known ones).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status: dict[str, dict] = {}
    for method in params.methods:
        kind = method_kind(method)
        info: dict = {"method": method, "kind": kind}
        if kind == "external":
            info["version"] = external_tool(method, params.options.get(method) or {}).version_string()
            log.info("%s: %s", method, info["version"])
        write_json(out / f"{method}.json", info)
        status[method] = info
    for stale in out.glob("*.json"):  # methods removed from fuse.methods
        if stale.stem not in status:
            stale.unlink()
    return status


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("peers", "Record which fusion methods are registered and which external tools are installed.")
    p.add_argument("out", help="output folder (<method>.json per method)")
    a = p.parse_args(argv)
    run(load_params(a.params, "fuse"), a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
