"""Stage ``synthesize``: write synthetic focal stacks with ground truth.

Two splits, each its own DVC stage (``synthesize@benchmark``, ``synthesize@train``) so that changing the training
set does not invalidate the benchmark:

- ``benchmark``: held-out stacks as a benchmark tree ``<out>/<dataset>/dof_stack/<scene>/<i>.png`` with
  ``AiF/<scene>.png`` (the clean all-in-focus image), ``focus_index_gt/<scene>.npy`` (int64 layer per pixel) and
  ``depth/<scene>.png`` (16-bit disparity, larger = nearer);
- ``train``: the upstream training layout ``<out>/<dataset>/TR/focus_stack/<scene>/<i>.png`` +
  ``focus_index_gt/<scene>.npy`` + ``AiF/<scene>.png`` read by :class:`stackmff.data.datasets.FolderStacks`.

Scenes come from :func:`stackmff.data.procedural.make_scene` (``source: procedural``), from dead-leaves composites
of the photo bank written by the ``photos`` stage (``source: photos``,
:func:`stackmff.data.photos.make_photo_scene`: natural image statistics) or, in the paper profile, from the
extracted images and depth maps (``source: extracted``). Every dataset of ``synthesize.<split>.datasets``
gets ``scenes`` stacks; its value is the number of invalid layers inserted per stack (0 = clean stacks).

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.synthesize --params params.yaml --split benchmark --photos data/photos \
        data/depth data/benchmarks/synthetic
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from pipelines.config import BaseParams, SplitParams, SynthesizeParams, load_params
from pipelines.stages._common import parser, run_main, write_json
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, load_image, natural_key, save_image

__all__ = ["main", "run", "synthesize_split"]

log = logging.getLogger("stackmff.pipelines.synthesize")

SPLITS = ("benchmark", "train")


def _procedural(params: SplitParams, seed: int, count: int) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    from stackmff.data.procedural import make_scene

    for i in range(count):
        scene = make_scene(seed + i, params.size, params.size)
        yield f"{i:04d}", scene.image, scene.disparity


def _photos(
    params: SplitParams, photos: Path | None, seed: int, count: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    from stackmff.data.photos import load_photo_bank, make_photo_scene

    if photos is None:
        raise StackMFFError("source: photos needs the photo bank; pass --photos DIR (written by the photos stage)")
    bank = load_photo_bank(photos)
    for i in range(count):
        scene = make_photo_scene(seed + i, params.size, params.size, bank)
        yield f"{i:04d}", scene.image, scene.disparity


def _extracted(
    params: SplitParams, depth_root: Path, dataset: str, seed: int
) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Random crops of extracted images with their depth (``<depth_root>/<dataset>/{images,depth}/``)."""
    images = depth_root / dataset / "images"
    depths = depth_root / dataset / "depth"
    if not images.is_dir():
        log.warning("%s has no extracted images (raw data absent?): skipped", dataset)
        return
    files = sorted((p for p in images.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
    rng = np.random.default_rng(seed)
    for path in files[: params.scenes] if params.scenes > 0 else files:
        dpath = next(iter(sorted(depths.glob(path.stem + ".*"))), None)
        if dpath is None:
            log.warning("%s: no depth map for %s; skipped", dataset, path.name)
            continue
        img, _ = load_image(path)
        dep, _ = load_image(dpath)
        disparity = dep[0]
        _, h, w = img.shape
        s = min(params.size, h, w)
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        if img.shape[0] == 1:
            img = np.repeat(img, 3, axis=0)
        yield path.stem, img[:, y : y + s, x : x + s].copy(), disparity[y : y + s, x : x + s].copy()


def synthesize_split(
    params: SplitParams, base: BaseParams, split: str, depth_root: Path, out: Path, photos: Path | None = None
) -> dict:
    """Write one split; returns ``{dataset: {"scenes": k, "layers": [...]}}``."""
    from stackmff.data.augment import inject_invalid_layers, shuffle_layers
    from stackmff.data.synthesis import synthesize_physical, synthesize_upstream

    if split not in SPLITS:
        raise StackMFFError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if params.mode not in ("physical", "upstream"):
        raise StackMFFError(f"synthesize.{split}.mode must be physical or upstream, got {params.mode!r}")
    if params.source not in ("procedural", "photos", "extracted"):
        raise StackMFFError(f"synthesize.{split}.source must be procedural, photos or extracted, got {params.source!r}")
    if not params.layers or min(params.layers) < 2:
        raise StackMFFError(f"synthesize.{split}.layers must list layer counts >= 2, got {params.layers}")
    summary: dict = {}
    for d, (dataset, n_invalid) in enumerate(params.datasets.items()):
        seed = base.seed + params.seed + 100_003 * d
        rng = np.random.default_rng(seed)
        if params.source == "procedural":
            scenes = _procedural(params, seed, params.scenes)
        elif params.source == "photos":
            scenes = _photos(params, photos, seed, params.scenes)
        else:
            scenes = _extracted(params, depth_root, dataset, seed)
        root = out / dataset / ("TR" if split == "train" else "")
        stack_dir = root / ("focus_stack" if split == "train" else "dof_stack")
        counts = []
        for k, (name, image, disparity) in enumerate(scenes):
            n = params.layers[k % len(params.layers)]
            if params.mode == "physical":
                st = synthesize_physical(image, disparity, n, rng=rng)
            else:
                st = synthesize_upstream(image, np.rint(disparity * 255).astype(np.uint8), n)
            if n_invalid > 0:
                st = inject_invalid_layers(st, rng, count=n_invalid)
            if not params.ordered:
                st = shuffle_layers(st, rng)
            for i in range(st.n):
                save_image(stack_dir / name / f"{i:02d}.png", st.layers[i], overwrite=True)
            save_image(root / "AiF" / f"{name}.png", st.aif, overwrite=True)
            save_image(root / "depth" / f"{name}.png", disparity, bit_depth=16, overwrite=True)
            (root / "focus_index_gt").mkdir(parents=True, exist_ok=True)
            np.save(root / "focus_index_gt" / f"{name}.npy", st.index.astype(np.int64))
            counts.append(st.n)
        summary[dataset] = {"scenes": len(counts), "layers": counts, "invalid_per_stack": n_invalid}
        log.info("%s/%s: %d stacks, N = %s", split, dataset, len(counts), sorted(set(counts)))
    return summary


def run(
    params: SynthesizeParams,
    base: BaseParams,
    split: str,
    depth_root: str | Path,
    out: str | Path,
    photos: str | Path | None = None,
) -> dict:
    """Synthesise ``split`` (``benchmark`` or ``train``) into ``out``; writes ``<out>/synthesis.json``.

    Args:
        params: the ``synthesize:`` section.
        base: the ``base:`` section (seed).
        split: which split.
        depth_root: output of the depth stage (used when the split's source is ``extracted``).
        out: folder to write.
        photos: the photo bank (output of the photos stage), used when the split's source is ``photos``.

    Returns:
        Per-dataset counts, as written to ``synthesis.json``.
    """
    out = Path(out)
    split_params: SplitParams = getattr(params, split) if split in SPLITS else None  # type: ignore[assignment]
    summary = synthesize_split(split_params, base, split, Path(depth_root), out, Path(photos) if photos else None)
    if not any(v["scenes"] for v in summary.values()):
        raise StackMFFError(f"synthesize.{split} produced no stacks; check its datasets and source")
    write_json(out / "synthesis.json", {"split": split, "datasets": summary})
    return summary


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("synthesize", "Write synthetic focal stacks with ground truth.")
    p.add_argument("--split", required=True, choices=SPLITS)
    p.add_argument("--photos", help="photo bank of the photos stage (for source: photos)")
    p.add_argument("depth", help="output of the depth stage (images + depth per dataset)")
    p.add_argument("out", help="folder to write")
    a = p.parse_args(argv)
    run(load_params(a.params, "synthesize"), load_params(a.params, "base"), a.split, a.depth, a.out, a.photos)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
