"""Benchmark trees: the scenes of ``<root>/<dataset>/dof_stack/<scene>/`` (stacks) and ``<root>/<dataset>/{A,B}/``
(two-image pairs), found once for every caller (``stackmff fuse-dataset``/``fuse-pairs``/``evaluate``, the DVC
stages, the Prefect flows).

A missing layout is not an error of the finder: :func:`find_scenes` returns the scenes of every layout present and
raises only when the root is missing, a requested dataset is absent, or nothing at all is found.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import StackMFFError
from ..io import IMAGE_EXTENSIONS, natural_key

__all__ = ["GT_DIR_NAMES", "STACK_DIR_NAMES", "Scene", "SceneKind", "find_scenes", "is_benchmark_tree"]

log = logging.getLogger("stackmff")

SceneKind = Literal["stack", "pair"]
KINDS: tuple[SceneKind, ...] = ("stack", "pair")
STACK_DIR_NAMES = ("dof_stack", "image stack", "image_stack", "focus_stack")
GT_DIR_NAMES = ("AiF", "aif", "AIF", "gt", "GT")


@dataclass(frozen=True)
class Scene:
    """One input of a benchmark tree.

    Attributes:
        dataset: dataset folder name.
        scene: scene name (the stack folder's name, or the pair's file stem); the fused result is
            ``<out>/<dataset>/<scene><ext>``.
        kind: ``"stack"`` (a folder of layers) or ``"pair"`` (two files).
        inputs: what the loader reads: ``(stack folder,)`` or ``(A file, B file)``.
        ground_truth: the all-in-focus image ``<dataset>/AiF/<scene>.<ext>`` of a stack, when there is one.
        index_gt: the ground-truth focus index ``<dataset>/focus_index_gt/<scene>.npy`` (``(H, W)`` layer per
            pixel, as the synthesis writes it), when there is one.
    """

    dataset: str
    scene: str
    kind: SceneKind
    inputs: tuple[Path, ...]
    ground_truth: Path | None = None
    index_gt: Path | None = None

    def output(self, out: str | os.PathLike, ext: str = ".png") -> Path:
        """The fused result's path under the output root ``out``."""
        return Path(out) / self.dataset / f"{self.scene}{ext}"

    @property
    def name(self) -> str:
        """``dataset/scene``, as in log lines and error messages."""
        return f"{self.dataset}/{self.scene}"


def _images(folder: Path) -> list[Path]:
    return [q for q in sorted(folder.iterdir(), key=natural_key) if q.suffix.lower() in IMAGE_EXTENSIONS]


def _find_gt(dataset_dir: Path, scene: str) -> Path | None:
    for d in GT_DIR_NAMES:
        if (dataset_dir / d).is_dir():
            for q in _images(dataset_dir / d):
                if q.stem == scene:
                    return q
    return None


def _stack_dir(d: Path) -> Path | None:
    return next((d / n for n in STACK_DIR_NAMES if (d / n).is_dir()), None)


def _is_pair_dataset(d: Path) -> bool:
    return (d / "A").is_dir() and (d / "B").is_dir()


def _dataset_dirs(root: Path, marker: Callable[[Path], bool]) -> list[Path]:
    if marker(root):  # the root itself is one dataset
        return [root]
    return [d for d in sorted(root.iterdir(), key=natural_key) if d.is_dir() and marker(d)]


def _stack_scenes(root: Path) -> list[Scene]:
    scenes = []
    for ddir in _dataset_dirs(root, lambda d: _stack_dir(d) is not None):
        sdir = _stack_dir(ddir)
        assert sdir is not None
        for scene_dir in sorted((q for q in sdir.iterdir() if q.is_dir()), key=natural_key):
            name = scene_dir.name
            index_gt = ddir / "focus_index_gt" / f"{name}.npy"
            scenes.append(
                Scene(
                    ddir.name,
                    name,
                    "stack",
                    (scene_dir,),
                    _find_gt(ddir, name),
                    index_gt if index_gt.is_file() else None,
                )
            )
    return scenes


def _pair_scenes(root: Path) -> list[Scene]:
    """Pairs matched by file stem; in sorted order, with a warning, when the names differ."""
    scenes = []
    for ddir in _dataset_dirs(root, _is_pair_dataset):
        a_files, b_files = _images(ddir / "A"), _images(ddir / "B")
        if len(a_files) != len(b_files):
            raise StackMFFError(
                f"{ddir}: A has {len(a_files)} images and B has {len(b_files)}; every A image needs a B partner"
            )
        b_by_stem = {q.stem: q for q in b_files}
        if all(q.stem in b_by_stem for q in a_files):
            scenes += [Scene(ddir.name, q.stem, "pair", (q, b_by_stem[q.stem])) for q in a_files]
        else:
            log.warning("%s: A and B file names differ; pairing them in sorted order", ddir)
            scenes += [Scene(ddir.name, a.stem, "pair", (a, b)) for a, b in zip(a_files, b_files, strict=True)]
    return scenes


_FINDERS: dict[SceneKind, Callable[[Path], list[Scene]]] = {"stack": _stack_scenes, "pair": _pair_scenes}
_EXPECTED = {"stack": "<root>/<dataset>/dof_stack/<scene>/ image folders", "pair": "<root>/<dataset>/A/ and B/ folders"}
_NOUN = {"stack": "focal stacks", "pair": "image pairs"}


def find_scenes(
    root: str | os.PathLike,
    datasets: Iterable[str] | None = None,
    *,
    kinds: Sequence[SceneKind] = KINDS,
) -> list[Scene]:
    """List the scenes of a benchmark tree: stacks first, then pairs, each in natural order.

    Args:
        root: benchmark root (or one dataset folder).
        datasets: only these datasets (default: all found).
        kinds: the layouts to look for (``"stack"``, ``"pair"``).

    Raises:
        StackMFFError: root missing, A/B folders of different lengths, a requested dataset absent (the message
            lists those available), or no scene of the requested kinds.

    Examples:
        >>> import tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> for scene in ("s10", "s2"):
        ...     (root / "Lytro" / "dof_stack" / scene).mkdir(parents=True)
        >>> [s.name for s in find_scenes(root)]
        ['Lytro/s2', 'Lytro/s10']
    """
    root = Path(root)
    unknown = [k for k in kinds if k not in _FINDERS]
    if unknown or not kinds:
        raise StackMFFError(f"unknown scene kind(s) {unknown or '(none)'}; use {', '.join(KINDS)}")
    if not root.is_dir():
        raise StackMFFError(f"dataset root not found: {root}; check the path")
    scenes = [sc for k in kinds for sc in _FINDERS[k](root)]
    if datasets is not None:
        wanted = list(dict.fromkeys(datasets))
        found = list(dict.fromkeys(sc.dataset for sc in scenes))
        missing = [d for d in wanted if d not in found]
        if missing:
            raise StackMFFError(
                f"dataset(s) not found under {root}: {', '.join(missing)}; available: {', '.join(found) or 'none'}"
            )
        scenes = [sc for sc in scenes if sc.dataset in wanted]
    if not scenes:
        what = " or ".join(_NOUN[k] for k in kinds)
        expected = " or ".join(_EXPECTED[k] for k in kinds)
        raise StackMFFError(f"no {what} found under {root}; expected {expected}")
    return scenes


def is_benchmark_tree(root: str | os.PathLike) -> bool:
    """True when ``root`` holds at least one stack or pair scene (a missing root is not one)."""
    root = Path(root)
    if not root.is_dir():
        return False
    try:
        return any(_FINDERS[k](root) for k in KINDS)
    except StackMFFError:  # A/B of different lengths: a pair tree, a broken one
        return True
