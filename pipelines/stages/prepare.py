"""Stage ``prepare``: bring one benchmark source into ``data/benchmarks/<name>``, the tree every other stage reads.

Two kinds of source (``prepare.sources`` in ``params.yaml`` maps benchmark name -> source; ``dvc.yaml`` runs one
stage per entry):

- the bundled stacks ``data/samples/<scene>/*.jpg`` (folders of layers, no ground truth) become
  ``<out>/<prepare.dataset>/dof_stack/<scene>/<i>.<ext>``; files are copied byte for byte unless
  ``prepare.max_side`` asks for area downscaling (then written as PNG);
- a benchmark root that already has the layout (``<root>/<dataset>/dof_stack|image stack/<scene>/`` with ``AiF/``
  etc., or ``<root>/<dataset>/{A,B}/``), e.g. the paper's benchmarks, is copied as it is.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.prepare --params params.yaml data/samples data/benchmarks/samples
    python -m pipelines.stages.prepare --params params.yaml /data/mff_benchmarks data/benchmarks/paper
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2

from pipelines.config import PrepareParams, load_params
from pipelines.stages._common import parser, run_main
from stackmff.benchmark import is_benchmark_tree
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, load_image, natural_key, save_image

__all__ = ["main", "run"]

log = logging.getLogger("stackmff.pipelines.prepare")


def run(params: PrepareParams, samples: str | Path, out: str | Path) -> list[str]:
    """Copy a benchmark root, or copy (or downscale) every stack folder of ``samples``, into the tree ``out``.

    Args:
        params: the ``prepare:`` section.
        samples: a benchmark root (copied as it is), or a folder whose sub-folders each hold one stack's layers.
        out: benchmark root to create.

    Returns:
        The scene names written (for a copied benchmark root: its dataset folders).

    Raises:
        StackMFFError: ``samples`` is missing, or holds neither a benchmark tree nor stack folders of 2+ images.
    """
    samples, out = Path(samples), Path(out)
    if params.max_side < 0:
        raise StackMFFError(f"prepare.max_side must be >= 0, got {params.max_side}; use 0 to keep the size")
    if not samples.is_dir():
        raise StackMFFError(f"benchmark source {samples} not found; fix prepare.sources in params.yaml")
    if is_benchmark_tree(samples):
        names = sorted((p.name for p in samples.iterdir() if p.is_dir()), key=natural_key)
        for name in names:
            shutil.copytree(samples / name, out / name, dirs_exist_ok=True)
            log.info("copied benchmark dataset %s from %s", name, samples)
        return names
    scenes = []
    for folder in sorted((p for p in samples.iterdir() if p.is_dir()), key=natural_key) if samples.is_dir() else []:
        layers = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
        if len(layers) < 2:
            continue
        dst = out / params.dataset / "dof_stack" / folder.name
        dst.mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(layers):
            if params.max_side == 0:
                shutil.copyfile(src, dst / f"{i:02d}{src.suffix.lower()}")
                continue
            img, bits = load_image(src)
            img = _downscale(img, params.max_side)
            save_image(dst / f"{i:02d}.png", img, bit_depth=bits, overwrite=True)
        scenes.append(folder.name)
        log.info("prepared %s (%d layers)", folder.name, len(layers))
    if not scenes:
        raise StackMFFError(f"no stack folders with 2+ images in {samples}; expected {samples}/<scene>/<layers>")
    return scenes


def _downscale(img, max_side: int):
    _, h, w = img.shape
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return img
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    hwc = cv2.resize(img.transpose(1, 2, 0), size, interpolation=cv2.INTER_AREA)
    return (hwc[None] if hwc.ndim == 2 else hwc.transpose(2, 0, 1)).clip(0.0, 1.0)


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("prepare", "Turn the bundled sample stacks (or copy a benchmark root) into a benchmark tree.")
    p.add_argument("samples", help="folder of stack folders, or a benchmark root")
    p.add_argument("out", help="benchmark root to write")
    a = p.parse_args(argv)
    run(load_params(a.params, "prepare"), a.samples, a.out)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
