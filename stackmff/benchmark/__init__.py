"""The application layer: from a benchmark tree of files to fused images, run records and metric tables.

One code path for every caller — ``stackmff fuse-dataset``/``fuse-pairs``/``evaluate``, the DVC stage scripts of
``pipelines/stages`` and the Prefect flows of ``pipelines/flows`` are thin callers of:

- :func:`find_scenes` / :class:`Scene` (:mod:`~stackmff.benchmark.scenes`): the stacks and pairs of a benchmark
  tree;
- :func:`fuse_tree` / :func:`fuse_scene` (:mod:`~stackmff.benchmark.fuse`): every scene with one method
  (registered, external tool or imported), one record per scene, resumable, a failed scene never stops the others;
- :func:`evaluate_tree` (:mod:`~stackmff.benchmark.evaluate`): every fused result scored into a tidy table;
- :class:`PeakMemory` (:mod:`~stackmff.benchmark.memory`): the peak-memory column of the run records.

``evaluate_tree`` imports :mod:`metrics` (piq, ~2 s): it is loaded on first use, not with this package.
"""

from __future__ import annotations

from typing import Any

from .fuse import external_tool, fuse_scene, fuse_tree, method_kind, raise_for_failures
from .memory import PeakMemory
from .scenes import Scene, find_scenes, is_benchmark_tree

__all__ = [
    "PeakMemory",
    "Scene",
    "evaluate_tree",
    "external_tool",
    "find_scenes",
    "fuse_scene",
    "fuse_tree",
    "is_benchmark_tree",
    "method_kind",
    "raise_for_failures",
]


def __getattr__(name: str) -> Any:
    if name == "evaluate_tree":  # metrics (piq, torchvision) only when a table is computed
        from .evaluate import evaluate_tree

        return evaluate_tree
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
