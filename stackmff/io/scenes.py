"""Benchmark dataset trees: the stacks of ``<root>/<dataset>/dof_stack/<scene>/`` and the pairs of ``A/``, ``B/``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import StackMFFError
from .decode import IMAGE_EXTENSIONS
from .stack import natural_key

__all__ = ["PairScene", "StackScene", "find_pair_scenes", "find_stack_scenes"]

log = logging.getLogger("stackmff")

STACK_DIR_NAMES = ("dof_stack", "image stack", "image_stack", "focus_stack")
GT_DIR_NAMES = ("AiF", "aif", "AIF", "gt", "GT")


@dataclass(frozen=True)
class StackScene:
    """One focal stack of a benchmark tree: ``<root>/<dataset>/dof_stack/<scene>/`` (+ ``AiF/<scene>.<ext>``)."""

    dataset: str
    scene: str
    stack_dir: Path
    ground_truth: Path | None = None


@dataclass(frozen=True)
class PairScene:
    """One two-image pair of a benchmark tree: ``<root>/<dataset>/A/<name>`` and ``<root>/<dataset>/B/<name>``."""

    dataset: str
    scene: str
    a: Path
    b: Path


def _find_gt(dataset_dir: Path, scene: str) -> Path | None:
    for d in GT_DIR_NAMES:
        gdir = dataset_dir / d
        if gdir.is_dir():
            for q in sorted(gdir.iterdir(), key=natural_key):
                if q.stem == scene and q.suffix.lower() in IMAGE_EXTENSIONS:
                    return q
    return None


def _dataset_dirs(root: Path, datasets: Iterable[str] | None, marker) -> list[Path]:
    if not root.is_dir():
        raise StackMFFError(f"dataset root not found: {root}; check the path")
    if marker(root):  # the root itself is one dataset
        candidates = [root]
    else:
        candidates = [d for d in sorted(root.iterdir(), key=natural_key) if d.is_dir() and marker(d)]
    if datasets:
        wanted = set(datasets)
        missing = wanted - {d.name for d in candidates}
        if missing:
            raise StackMFFError(
                f"dataset(s) not found under {root}: {', '.join(sorted(missing))}; "
                f"available: {', '.join(d.name for d in candidates) or 'none'}"
            )
        candidates = [d for d in candidates if d.name in wanted]
    return candidates


def find_stack_scenes(root: str | os.PathLike, datasets: Iterable[str] | None = None) -> list[StackScene]:
    """List the stacks of a benchmark tree ``<root>/<dataset>/{dof_stack|image stack}/<scene>/``.

    ``root`` may also be a single dataset folder. Ground truth is looked up in ``<dataset>/AiF/<scene>.<ext>``.

    Raises:
        StackMFFError: root missing, a requested dataset absent, or no stack found.
    """
    root = Path(root)

    def stack_dir(d: Path) -> Path | None:
        return next((d / n for n in STACK_DIR_NAMES if (d / n).is_dir()), None)

    scenes: list[StackScene] = []
    for ddir in _dataset_dirs(root, datasets, lambda d: stack_dir(d) is not None):
        sdir = stack_dir(ddir)
        assert sdir is not None
        for scene_dir in sorted((q for q in sdir.iterdir() if q.is_dir()), key=natural_key):
            scenes.append(StackScene(ddir.name, scene_dir.name, scene_dir, _find_gt(ddir, scene_dir.name)))
    if not scenes:
        raise StackMFFError(
            f"no focal stacks found under {root}; expected <root>/<dataset>/dof_stack/<scene>/ image folders"
        )
    return scenes


def find_pair_scenes(root: str | os.PathLike, datasets: Iterable[str] | None = None) -> list[PairScene]:
    """List the pairs of ``<root>/<dataset>/{A,B}/``, matched by file name (stem).

    Falls back to sorted order, with a warning, when the names of A and B do not match one to one.

    Raises:
        StackMFFError: root missing, a requested dataset absent, no pairs, or A and B of different lengths.
    """
    root = Path(root)
    pairs: list[PairScene] = []
    for ddir in _dataset_dirs(root, datasets, lambda d: (d / "A").is_dir() and (d / "B").is_dir()):
        a_files = [q for q in sorted((ddir / "A").iterdir(), key=natural_key) if q.suffix.lower() in IMAGE_EXTENSIONS]
        b_files = [q for q in sorted((ddir / "B").iterdir(), key=natural_key) if q.suffix.lower() in IMAGE_EXTENSIONS]
        b_by_stem = {q.stem: q for q in b_files}
        if a_files and all(q.stem in b_by_stem for q in a_files) and len(a_files) == len(b_files):
            pairs.extend(PairScene(ddir.name, q.stem, q, b_by_stem[q.stem]) for q in a_files)
        else:
            if len(a_files) != len(b_files):
                raise StackMFFError(
                    f"{ddir}: A has {len(a_files)} images and B has {len(b_files)}; every A image needs a B partner"
                )
            log.warning("%s: A and B file names differ; pairing them in sorted order", ddir)
            pairs.extend(PairScene(ddir.name, a.stem, a, b) for a, b in zip(a_files, b_files))
    if not pairs:
        raise StackMFFError(f"no image pairs found under {root}; expected <root>/<dataset>/A/ and B/ folders")
    return pairs
