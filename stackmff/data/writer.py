"""Write synthetic focal-stack datasets to disk in the upstream StackMFF layout (parallel, seeded, resumable).

Layout (interchangeable with data made by the upstream scripts)::

    <root>/<DATASET>/<split>/focus_stack/<name>/<i>.jpg   # layers, i = 0..N-1 in the (shuffled) stack order
    <root>/<DATASET>/<split>/focus_index_gt/<name>.npy    # (H, W) int64 GT focus index
    <root>/<DATASET>/<split>/AiF/<name>.jpg               # all-in-focus image
    <root>/<DATASET>/<split>/depth/<name>.png             # 16-bit disparity (larger = nearer)

Scene ``i`` is synthesised from ``numpy.random.default_rng([seed, i])`` alone, so any subset of scenes can be
(re)made in any order by any number of processes with identical results. The GT ``.npy`` is written last (atomically):
a scene whose ``.npy`` exists is complete and is skipped on a rerun; a partial scene is redone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._checks import check_choice
from ..errors import StackMFFError
from ..io import IMAGE_EXTENSIONS, atomic_folder, atomic_write, load_image, natural_key, save_image
from .augment import INVALID_KINDS, inject_invalid_layers, shuffle_layers
from .procedural import make_scene
from .synthesis import synthesize_physical, synthesize_upstream

__all__ = ["SynthesisConfig", "list_image_depth_pairs", "write_stack_dataset"]

log = logging.getLogger("stackmff")


@dataclass
class SynthesisConfig:
    """How each stack is made.

    Attributes:
        mode: ``"upstream"`` (StackMFF-V3 Gaussian recipe) or ``"physical"`` (thin lens, occlusion, noise).
        n_range: inclusive range of the number of VALID layers, drawn uniformly per scene (upstream: 2..24).
        layers: explicit list of layer counts to cycle through instead of ``n_range`` (e.g. V2 data: 8..24).
        shuffle: shuffle the layer order (upstream: yes; V2/star data keeps depth order).
        invalid_prob: probability that a stack gets 1..``max_invalid`` invalid layers (ours; upstream: 0).
        max_invalid: most invalid layers per stack.
        invalid_kinds: kinds to draw.
        max_coc: physical mode: CoC radius in px for a disparity difference of 1, at 256 px image height; scaled by
            ``min(H, W) / 256``.
        noise: physical mode: ``(a, b)`` Poisson gain and read-noise std upper bounds, drawn per scene.
        breathing: physical mode: magnification change across the focus range.
        exposure_jitter: physical mode: per-layer gain jitter.
        size: procedural scenes: ``(H, W)``; extracted images: longest side is reduced to ``max(size)`` if larger.
        ext: layer / AiF file extension (``.jpg`` as upstream, or ``.png`` for lossless data).
        quality: JPEG quality.
    """

    mode: str = "upstream"
    n_range: tuple[int, int] = (2, 24)
    layers: Sequence[int] = ()
    shuffle: bool = True
    invalid_prob: float = 0.0
    max_invalid: int = 2
    invalid_kinds: Sequence[str] = INVALID_KINDS
    max_coc: tuple[float, float] = (4.0, 12.0)
    noise: tuple[float, float] = (3e-4, 5e-3)
    breathing: float = 0.0
    exposure_jitter: float = 0.0
    size: tuple[int, int] = (256, 256)
    ext: str = ".jpg"
    quality: int = 95
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        check_choice(self.mode, ("upstream", "physical"), "mode")
        if self.n_range[0] < 2 or self.n_range[1] < self.n_range[0]:
            raise StackMFFError(f"n_range must be (lo, hi) with 2 <= lo <= hi, got {tuple(self.n_range)}.")
        if self.layers and min(self.layers) < 2:
            raise StackMFFError(f"layers must list counts >= 2, got {list(self.layers)}.")
        if self.ext.lower() not in IMAGE_EXTENSIONS:
            raise StackMFFError(f"ext must be an image extension such as .jpg or .png, got {self.ext!r}.")


def list_image_depth_pairs(folder: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """Pairs ``(name, image, depth)`` from an extracted dataset folder ``<folder>/images/`` + ``<folder>/depth/``.

    Depth maps are matched by file stem (any image extension; 16-bit PNG from ``stackmff depth``); images without
    depth are skipped with one warning.
    """
    folder = Path(folder)
    images, depths = folder / "images", folder / "depth"
    if not images.is_dir() or not depths.is_dir():
        raise StackMFFError(
            f"{folder} must hold images/ and depth/; run `stackmff extract` then `stackmff depth` (NYU has its own depth)"
        )
    by_stem = {p.stem: p for p in depths.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS}
    pairs, missing = [], 0
    for p in sorted((q for q in images.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key):
        if p.stem in by_stem:
            pairs.append((p.stem, p, by_stem[p.stem]))
        else:
            missing += 1
    if missing:
        log.warning("%s: %d image(s) without depth skipped", folder, missing)
    return pairs


def _scene_from_files(image_path: Path, depth_path: Path, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    img, _ = load_image(image_path)
    dep, _ = load_image(depth_path)
    if img.shape[0] == 1:
        img = np.repeat(img, 3, axis=0)
    disp = dep[0] if dep.shape[0] == 1 else dep.mean(0)
    if disp.shape != img.shape[1:]:
        disp = cv2.resize(disp, img.shape[:0:-1], interpolation=cv2.INTER_LINEAR)
    h, w = disp.shape
    s = max_side / max(h, w)
    if s < 1.0:
        size = (max(8, round(w * s)), max(8, round(h * s)))
        img = cv2.resize(img.transpose(1, 2, 0), size, interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
        disp = cv2.resize(disp, size, interpolation=cv2.INTER_AREA)
    lo, hi = float(disp.min()), float(disp.max())
    disp = (disp - lo) / max(hi - lo, 1e-6)  # relative depth: only the order and spread matter here
    return np.ascontiguousarray(img, np.float32), disp.astype(np.float32)


def _make_one(task: tuple) -> tuple[str, int]:
    """Synthesise and write scene ``i``; returns ``(name, N)``. Runs in worker processes."""
    i, name, source, split_dir, cfg, seed = task
    split_dir = Path(split_dir)
    rng = np.random.default_rng([seed, i])
    if source is None:
        sc = make_scene(rng, cfg.size[0], cfg.size[1])
        image, disp = sc.image, sc.disparity
    else:
        image, disp = _scene_from_files(Path(source[0]), Path(source[1]), max(cfg.size))
    n = int(cfg.layers[i % len(cfg.layers)]) if cfg.layers else int(rng.integers(cfg.n_range[0], cfg.n_range[1] + 1))
    if cfg.mode == "upstream":
        st = synthesize_upstream(image, np.rint(disp * 255).astype(np.uint8), n)
    else:
        scale = min(image.shape[1:]) / 256.0
        st = synthesize_physical(
            image,
            disp,
            n,
            rng=rng,
            max_coc=float(rng.uniform(*cfg.max_coc)) * scale,
            noise=(float(rng.uniform(0, cfg.noise[0])), float(rng.uniform(0, cfg.noise[1]))),
            breathing=cfg.breathing,
            exposure_jitter=cfg.exposure_jitter,
        )
    if cfg.shuffle:
        st = shuffle_layers(st, rng)
    if cfg.invalid_prob > 0 and rng.random() < cfg.invalid_prob:
        st = inject_invalid_layers(st, rng, kinds=cfg.invalid_kinds, max_count=cfg.max_invalid)

    stack_dir = split_dir / "focus_stack" / name
    with atomic_folder(stack_dir, overwrite=True) as tmp_dir:  # replaces a partial scene of an interrupted run
        for k in range(st.n):
            save_image(tmp_dir / f"{k}{cfg.ext}", st.layers[k], quality=cfg.quality)
    save_image(split_dir / "AiF" / f"{name}{cfg.ext}", st.aif, overwrite=True, quality=cfg.quality)
    save_image(split_dir / "depth" / f"{name}.png", st.disparity, bit_depth=16, overwrite=True)
    with atomic_write(split_dir / "focus_index_gt" / f"{name}.npy", overwrite=True) as f:
        np.save(f, st.index.astype(np.int64))
    return name, st.n


def write_stack_dataset(
    out_root: str | os.PathLike,
    dataset: str,
    *,
    split: str = "TR",
    source: str | os.PathLike | None = None,
    count: int | None = None,
    config: SynthesisConfig | None = None,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Synthesise a dataset of focal stacks into ``<out_root>/<dataset>/<split>/`` (upstream layout).

    Args:
        out_root: dataset root.
        dataset: dataset name (a folder under ``out_root``).
        split: ``"TR"`` or ``"TE"``.
        source: None for procedural scenes, or an extracted folder with ``images/`` and ``depth/``.
        count: number of scenes (procedural: required; extracted: the first ``count`` images, default all).
        config: how stacks are made (default: upstream recipe).
        seed: base seed; scene ``i`` uses ``default_rng([seed, i])``.
        workers: processes (1 = in this process).
        progress: show a tqdm progress bar.

    Returns:
        ``{"written": k, "skipped": s, "layers": {name: N}}`` (layers only for the scenes written now).

    Raises:
        StackMFFError: bad options or a source folder without images/depth.
    """
    cfg = config or SynthesisConfig()
    cfg.validate()
    check_choice(split, ("TR", "TE"), "split")
    if source is None:
        if not count or count < 1:
            raise StackMFFError("count must be >= 1 for procedural scenes; pass --count")
        jobs = [(i, f"{i:05d}", None) for i in range(count)]
    else:
        pairs = list_image_depth_pairs(source)
        if not pairs:
            raise StackMFFError(f"{source}: no image with a matching depth map; run `stackmff depth` first")
        pairs = pairs[:count] if count else pairs
        jobs = [(i, name, (str(img), str(dep))) for i, (name, img, dep) in enumerate(pairs)]
    split_dir = Path(out_root) / dataset / split
    (split_dir / "focus_stack").mkdir(parents=True, exist_ok=True)
    gt_dir = split_dir / "focus_index_gt"
    todo = [j for j in jobs if not (gt_dir / f"{j[1]}.npy").exists()]
    skipped = len(jobs) - len(todo)
    if skipped:
        log.info("%s/%s: %d of %d scenes already done, resuming", dataset, split, skipped, len(jobs))
    tasks = [(i, name, src, str(split_dir), cfg, seed) for i, name, src in todo]
    written: dict[str, int] = {}
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc=f"synthesize {dataset}/{split}", unit="stack", disable=not progress)
    try:
        if workers <= 1 or len(tasks) <= 1:
            for t in tasks:
                name, n = _make_one(t)
                written[name] = n
                bar.update()
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(_make_one, t) for t in tasks]
                for fut in as_completed(futures):
                    name, n = fut.result()
                    written[name] = n
                    bar.update()
    finally:
        bar.close()
    return {"written": len(written), "skipped": skipped, "layers": dict(sorted(written.items()))}
