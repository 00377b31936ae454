"""Helpers shared by the stage scripts: argument parsing, atomic JSON output, error exit."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from stackmff.errors import StackMFFError
from stackmff.io import atomic_write

__all__ = ["parser", "read_json", "run_main", "write_json"]

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
