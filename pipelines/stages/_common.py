"""Helpers shared by the stage scripts: argument parsing, atomic JSON output, memory measurement, error exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stackmff.errors import StackMFFError
from stackmff.io import atomic_write

__all__ = ["PeakMemory", "parser", "read_json", "run_main", "write_json"]

log = logging.getLogger("stackmff.pipelines")


def parser(stage: str, description: str) -> argparse.ArgumentParser:
    """An argparse parser with the ``--params`` option every stage takes."""
    p = argparse.ArgumentParser(
        prog=f"python -m pipelines.stages.{stage}",
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--params", default="params.yaml", help="parameters file (sections per stage)")
    return p


def run_main(fn: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Call a stage's ``_main``; a :class:`StackMFFError` becomes one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return fn(argv)
    except StackMFFError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    with atomic_write(path, mode="w", overwrite=True) as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def _status_kib(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak resident memory added while the ``with`` block runs, in MiB.

    On Linux the kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` on entry, so the
    measurement is exact and free; elsewhere (or where the reset is not permitted) the process's lifetime peak
    (``ru_maxrss``) is used, which over-reports for every stack after the largest one.

    Attributes:
        peak_mb: peak resident memory during the block minus the resident memory at its start.
    """

    def __init__(self) -> None:
        self.peak_mb = float("nan")
        self._start_kib = 0.0
        self._exact = False

    def __enter__(self) -> PeakMemory:
        self._start_kib = _status_kib("VmRSS") or 0.0
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._exact = True
        except OSError:
            self._exact = False
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kib("VmHWM") if self._exact else None
        if hwm is None:
            # ru_maxrss is KiB on Linux, bytes on macOS
            rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            hwm = rss / 1024.0 if sys.platform == "darwin" else rss
        self.peak_mb = max(0.0, (hwm - self._start_kib) / 1024.0)
