"""The pipeline's folders, read from the ``vars: - paths:`` block of ``dvc.yaml``: the one place they are written.

The DVC stages interpolate them (``${paths.fused}/${item.method}/${item.benchmark}``); the Prefect flows call the same
stage functions with :class:`Paths`, so a folder moved in ``dvc.yaml`` moves for both. The per-method/per-benchmark
names below (``<fused>/<method>/<benchmark>``, ``<runs>/<method>/<benchmark>.json`` ...) are checked against the
stages DVC resolves from ``dvc.yaml`` by ``tests/pipelines/test_paths.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from stackmff.errors import StackMFFError

__all__ = ["Paths", "load_paths"]


@dataclass(frozen=True)
class Paths:
    """Absolute folders of one checkout (``root`` joined with the ``dvc.yaml`` entries of the same names)."""

    root: Path
    raw: Path
    extracted: Path
    depth: Path
    photos: Path
    benchmarks: Path
    synth_train: Path
    peers: Path
    imported: Path
    fused: Path
    models: Path
    runs: Path
    metrics: Path
    bench: Path
    reports: Path

    def benchmark(self, name: str) -> Path:
        """The benchmark tree ``<benchmarks>/<name>``."""
        return self.benchmarks / name

    def fused_dir(self, method: str, benchmark: str) -> Path:
        """Fused images of one method on one benchmark (stage ``fuse`` output)."""
        return self.fused / method / benchmark

    def runs_json(self, method: str, benchmark: str) -> Path:
        """Run summary of one method on one benchmark (stage ``fuse`` output)."""
        return self.runs / method / f"{benchmark}.json"

    def metrics_csv(self, method: str, benchmark: str) -> Path:
        """Tidy metrics table of one method on one benchmark (stage ``evaluate`` output)."""
        return self.metrics / method / f"{benchmark}.csv"

    def model(self, method: str) -> Path:
        """The trained checkpoint of a learned method (stage ``train`` output)."""
        return self.models / method / "model.pt"


PROJECT_DVC_FILE = Path(__file__).resolve().parents[1] / "dvc.yaml"


def load_paths(root: str | os.PathLike = ".", dvc_file: str | os.PathLike | None = None) -> Paths:
    """The folders under ``root`` as declared by the ``paths`` variables of ``dvc_file`` (default: ``<root>/dvc.yaml``,
    else this project's ``dvc.yaml``: a data root without a pipeline file of its own has the project's layout).

    Raises:
        StackMFFError: the file is missing, has no ``vars: - paths:`` mapping, or lacks a folder :class:`Paths` needs.
    """
    root = Path(root).resolve()
    if dvc_file is not None:
        path = Path(dvc_file)
    else:
        path = root / "dvc.yaml" if (root / "dvc.yaml").is_file() else PROJECT_DVC_FILE
    if not path.is_file():
        raise StackMFFError(f"{path} not found; run from the repository root (the folder holding dvc.yaml)")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    found = [v["paths"] for v in data.get("vars") or [] if isinstance(v, dict) and isinstance(v.get("paths"), dict)]
    if not found:
        raise StackMFFError(f"{path} has no 'vars: - paths:' block; the pipeline's folders are declared there")
    names = [f.name for f in fields(Paths) if f.name != "root"]
    missing = [n for n in names if n not in found[0]]
    if missing:
        raise StackMFFError(f"{path}: vars paths lacks {', '.join(missing)}; add them to the paths block")
    return Paths(root=root, **{n: root / str(found[0][n]) for n in names})
