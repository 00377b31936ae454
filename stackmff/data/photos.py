"""Training scenes with natural image statistics: photographs composited at random depths ("dead leaves").

The procedural scenes of :mod:`stackmff.data.procedural` are mostly synthetic patterns with added fine noise. Real
stacks show fur, foliage, hair, fine print, specular highlights and smooth shading, and real flat regions carry no
texture at all. This module builds RGB-D scenes from photographs instead:

- :func:`collect_photos` writes a *photo bank* folder from sources that can be installed here: the photographs
  bundled inside the scikit-image wheel (``"skimage"``), matplotlib's sample data (``"matplotlib"``) and any folder
  of images (e.g. a Debian wallpaper package), with a ``LICENSES.md`` listing every file's source and licence;
- :func:`load_photo_bank` reads such a folder (cached);
- :func:`make_photo_scene` composites natural-image patches with occlusion at random depths: a far slanted
  background plane cut from one photograph, then "leaves" (discs with a power-law size distribution, ellipses,
  polygons, blobs, sticks, glyphs) each filled with a patch of a photograph, painted far to near so that the
  disparity is exact by construction. Patches keep their natural statistics (no synthetic overlay or noise is
  added); specular highlights (small saturated spots) are added to a few leaves.

The scenes go through the project's physical thin-lens synthesis (:func:`~stackmff.data.synthesis.synthesize_physical`)
like every other source, via :class:`~stackmff.data.datasets.ProceduralStacks` (``photos=...``) or the DVC
``synthesize`` stage (``source: photos``).

Shapes: ``image`` ``(3, H, W)`` float32 RGB in [0, 1]; ``disparity`` ``(H, W)`` float32 in [0, 1], larger = nearer.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import StackMFFError
from ..io import atomic_folder, read_rgb8
from .procedural import _fit_disparity, _oriented_crop, _shape_mask
from .rgbd import RGBDScene

__all__ = ["PHOTO_SOURCES", "collect_photos", "load_photo_bank", "make_photo_scene"]

log = logging.getLogger("stackmff")

# scikit-image photographs bundled in the wheel (no pooch download), with the licence its skimage.data docstring
# states. Left out: synthetic images (colorwheel, logo, checkerboard) and photographs without a stated licence
# (moon, page).
_SKIMAGE = {
    "astronaut": "public domain (NASA Great Images; skimage.data docstring: no known copyright restrictions)",
    "camera": "CC0 (photographer Lav Varshney; skimage.data docstring)",
    "coffee": "CC0 (photographer Rachel Michetti; skimage.data docstring)",
    "chelsea": "CC0 (photographer Stefan van der Walt; skimage.data docstring)",
    "rocket": "public domain (SpaceX photograph released into the public domain; skimage.data docstring)",
    "coins": "no known copyright restrictions (Brooklyn Museum Collection; skimage.data docstring)",
    "text": "public domain (Wikipedia File:Corner.png; skimage.data docstring)",
    "brick": "CC0 (CC0Textures Bricks25; skimage.data docstring)",
    "grass": "CC0 (DeviantArt linolafett Grass-01; skimage.data docstring)",
    "gravel": "CC0 (CC0Textures Gravel04; skimage.data docstring)",
    "immunohistochemistry": "no known copyright restrictions (CMMI; skimage.data docstring)",
    "hubble_deep_field": "public domain (NASA / HubbleSite; skimage.data docstring)",
    "clock": "public domain (photographer Stefan van der Walt; skimage.data docstring)",
    "cell": "CC0 (Paul Mueller et al.; skimage.data docstring)",
}
_MOTORCYCLE = "Middlebury 2014 stereo dataset (Scharstein et al.), research use, as bundled by scikit-image"
# matplotlib's mpl-data/sample_data photographs (shipped in the matplotlib wheel). Only the one whose licence is
# known: the other sample pictures (a gift-pack photograph, the logo) state none.
_MATPLOTLIB = {
    "grace_hopper.jpg": "public domain (U.S. Navy photograph of Grace Hopper, a work of the U.S. federal government)",
}
PHOTO_SOURCES = ("skimage", "matplotlib")
_EXT = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
_MIN_SIDE = 64


def _to_rgb_u8(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.shape[2] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        f = img.astype(np.float32)
        f = f / 255.0 if f.max() > 1.0 else f
        img = np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def _builtin(source: str) -> Iterator[tuple[str, np.ndarray, str]]:
    """(name, RGB uint8 (H, W, 3), licence) of one built-in source."""
    if source == "skimage":
        import skimage.data

        for name, lic in _SKIMAGE.items():
            try:
                img = getattr(skimage.data, name)()
            except Exception as exc:  # pragma: no cover - depends on the installed scikit-image
                log.warning("skimage.data.%s unavailable (%s); skipped", name, exc)
                continue
            yield name, _to_rgb_u8(img), lic
        try:  # left view of the bundled Middlebury 2014 stereo pair
            yield "motorcycle", _to_rgb_u8(skimage.data.stereo_motorcycle()[0]), _MOTORCYCLE
        except Exception as exc:  # pragma: no cover
            log.warning("skimage.data.stereo_motorcycle unavailable (%s); skipped", exc)
    elif source == "matplotlib":
        import matplotlib

        root = Path(matplotlib.get_data_path()) / "sample_data"
        for fname, lic in _MATPLOTLIB.items():
            path = root / fname
            if not path.is_file():
                continue
            yield Path(fname).stem, read_rgb8(path), lic
    else:
        raise StackMFFError(f"unknown photo source {source!r}; use one of {', '.join(PHOTO_SOURCES)} or a folder")


def _folder(path: Path, licence: str, include: Sequence[str] = ()) -> Iterator[tuple[str, np.ndarray, str]]:
    """Every image under ``path`` (only under its entries named in ``include`` when given); of a KDE-style
    ``contents/images/<W>x<H>.*`` set only the largest file."""
    roots = [path / name for name in include] if include else [path]
    for r in roots:
        if not r.exists():
            raise StackMFFError(f"{r} not found; fix the include list of the photo folder {path}")
    files = sorted(p for r in roots for p in ([r] if r.is_file() else r.rglob("*")) if p.suffix.lower() in _EXT)
    files = [p for p in files if p.stem != "screenshot"]  # KDE's preview thumbnails

    def area(p: Path) -> int:
        w, _, h = p.stem.partition("x")
        return int(w) * int(h) if w.isdigit() and h.isdigit() else 0

    largest: dict[Path, Path] = {}
    for p in files:
        if p.parent.name == "images" and (p.parent not in largest or area(p) > area(largest[p.parent])):
            largest[p.parent] = p
    files = [p for p in files if p.parent.name != "images" or largest[p.parent] == p]
    for p in files:
        try:
            arr = read_rgb8(p)
        except StackMFFError as exc:
            log.warning("%s; skipped", exc)
            continue
        name = "_".join(p.relative_to(path).with_suffix("").parts)
        yield name, arr, licence


def collect_photos(
    out: str | os.PathLike,
    sources: Sequence[str] = PHOTO_SOURCES,
    *,
    folders: dict[str, tuple] | None = None,
    max_side: int = 1024,
    overwrite: bool = False,
) -> dict:
    """Write a photo bank: ``<out>/<source>/<name>.png`` (8-bit RGB, longest side <= ``max_side``), ``LICENSES.md``
    and ``manifest.json``.

    Args:
        out: folder to create (written to a temporary sibling, then renamed: no partial bank is left behind).
        sources: built-in sources (:data:`PHOTO_SOURCES`): pip-installed, so every fresh clone has them.
        folders: extra sources ``{name: (folder, licence text[, include])}``, e.g. a Debian wallpaper package whose
            ``/usr/share/doc/<package>/copyright`` allows the use; ``include`` lists the sub-folders or files to take
            (default: all). Missing folders are an error.
        max_side: longest side after downscaling (INTER_AREA); smaller photos are kept as they are.
        overwrite: replace an existing ``out``.

    Returns:
        The manifest: ``{"photos": [{"source", "name", "file", "size", "licence"}...], "count"}``.

    Raises:
        StackMFFError: ``out`` exists without ``overwrite``, an unknown source, a missing folder, no photo at all.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise StackMFFError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if max_side < _MIN_SIDE:
        raise StackMFFError(f"max_side must be >= {_MIN_SIDE}, got {max_side}")
    for name, (folder, *_) in (folders or {}).items():
        if not Path(folder).is_dir():
            raise StackMFFError(f"photo folder {folder} ({name}) not found; install it or remove it from the list")
    items = []
    with atomic_folder(out, overwrite=True) as tmp:  # (an existing `out` was refused above unless overwrite)
        streams = [(s, _builtin(s)) for s in sources]
        streams += [
            (n, _folder(Path(v[0]), v[1], tuple(v[2]) if len(v) > 2 else ())) for n, v in (folders or {}).items()
        ]
        for src, stream in streams:
            for name, img, lic in stream:
                h, w = img.shape[:2]
                if min(h, w) < _MIN_SIDE:
                    continue
                s = max_side / max(h, w)
                if s < 1.0:
                    img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
                rel = f"{src}/{name}.png"
                (tmp / src).mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(tmp / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):  # pragma: no cover
                    raise StackMFFError(f"cannot write {tmp / rel}; check disk space")
                items.append(
                    {
                        "source": src,
                        "name": name,
                        "file": rel,
                        "size": [int(img.shape[0]), int(img.shape[1])],
                        "licence": lic,
                    }
                )
        if not items:
            raise StackMFFError("no photographs found in the given sources; install scikit-image / matplotlib")
        manifest = {"count": len(items), "photos": items}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
        lines = [
            "# Photo bank: sources and licences",
            "",
            "Generated by `stackmff.data.photos.collect_photos`; training data only, never committed to git.",
            "",
            "| file | licence |",
            "| --- | --- |",
        ]
        lines += [f"| {it['file']} | {it['licence']} |" for it in items]
        (tmp / "LICENSES.md").write_text("\n".join(lines) + "\n")
    return manifest


@functools.lru_cache(maxsize=4)
def _bank(folder: str, max_side: int) -> tuple[np.ndarray, ...]:
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in _EXT and p.is_file())
    out = []
    for p in files:
        img = read_rgb8(p).astype(np.float32) / np.float32(255.0)
        h, w = img.shape[:2]
        s = max_side / max(h, w)
        if s < 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        if min(img.shape[:2]) >= 32:
            out.append(np.ascontiguousarray(img))
    return tuple(out)


def load_photo_bank(folder: str | os.PathLike, *, max_side: int = 768) -> tuple[np.ndarray, ...]:
    """Read every image under ``folder`` as ``(H, W, 3)`` float32 RGB in [0, 1], longest side <= ``max_side``
    (cached per folder).

    Raises:
        StackMFFError: the folder is missing or holds no readable image.
    """
    root = Path(folder)
    if not root.is_dir():
        raise StackMFFError(f"photo bank {root} not found; create it with `stackmff photos {root}`")
    bank = _bank(str(root.resolve()), int(max_side))
    if not bank:
        raise StackMFFError(f"no images in the photo bank {root}; create it with `stackmff photos {root}`")
    return bank


def _photo_patch(h: int, w: int, bank: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A crop of a random photograph resampled to (h, w, 3): random zoom (0.5-2 output px per source px), flips and
    90-degree turns, a mild colour gain; natural statistics otherwise untouched."""
    src = bank[int(rng.integers(len(bank)))]
    sh, sw = src.shape[:2]
    scale = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    ch, cw = max(2, round(h / scale)), max(2, round(w / scale))
    if ch > sh or cw > sw:  # too small a source for that zoom: take what fits and upsample
        f = min(sh / ch, sw / cw)
        ch, cw = max(2, int(ch * f)), max(2, int(cw * f))
    crop = _oriented_crop(src, ch, cw, rng)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_CUBIC
    patch = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=interp)
    gain = np.exp(rng.uniform(-0.15, 0.15, 3)).astype(np.float32)
    return np.clip(patch * gain, 0.0, 1.0).astype(np.float32)


def _disc_leaf(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """A dead-leaves disc: radius from a power law p(r) ~ r^-3 between 2 px and half the frame."""
    rmin, rmax = 2.0, 0.5 * min(h, w)
    u = rng.random()
    r = 1.0 / np.sqrt((1 - u) / rmin**2 + u / rmax**2)  # inverse CDF of p(r) ~ r^-3 on [rmin, rmax]
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    ext = int(np.ceil(r)) + 1
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext + 1)
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext + 1)
    if y1 - y0 < 2 or x1 - x0 < 2:
        return None
    m = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.circle(m, (round(cx - x0), round(cy - y0)), max(1, round(r)), 1, -1)
    return (m, (y0, y1, x0, x1)) if m.any() else None


def _speculars(tex: np.ndarray, rng: np.random.Generator) -> None:
    """Paint a few small saturated highlights (clipped Gaussian spots) into ``tex`` in place."""
    h, w = tex.shape[:2]
    spots = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(1, 6))):
        s = float(rng.uniform(0.7, 3.0))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        ys, xs = np.ogrid[:h, :w]
        spots = np.maximum(spots, np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s)).astype(np.float32))
    peak = np.float32(rng.uniform(1.2, 3.0))
    tex += (peak * spots)[..., None]
    np.clip(tex, 0.0, 1.0, out=tex)


def make_photo_scene(
    seed: int | np.random.Generator,
    height: int,
    width: int,
    bank: Sequence[np.ndarray],
    *,
    n_leaves: tuple[int, int] = (4, 28),
    disc_share: float = 0.5,
    slant: float = 0.25,
    specular_prob: float = 0.15,
    min_disparity_range: float = 0.4,
) -> RGBDScene:
    """One dead-leaves RGB-D scene of photograph patches with exact disparity.

    Args:
        seed: an int or a numpy Generator (advanced in place).
        height, width: scene size (>= 8).
        bank: photographs ``(H, W, 3)`` float32 in [0, 1] (:func:`load_photo_bank`).
        n_leaves: inclusive range of the number of occluding leaves.
        disc_share: share of leaves that are power-law discs (the rest: the procedural object shapes).
        slant: largest disparity change across the frame of the background and across a leaf.
        specular_prob: chance that a leaf gets small saturated highlights.
        min_disparity_range: the disparity is stretched affinely (order and planes kept) to span at least this.

    Returns:
        :class:`~stackmff.data.rgbd.RGBDScene` named ``"photos"``.

    Examples:
        >>> g = np.random.default_rng(0)
        >>> bank = (g.random((80, 90, 3), dtype=np.float32),)
        >>> s = make_photo_scene(0, 48, 64, bank)
        >>> s.image.shape, s.disparity.shape
        ((3, 48, 64), (48, 64))
    """
    if height < 8 or width < 8:
        raise StackMFFError(f"scene size must be at least 8x8, got {height}x{width}.")
    if not bank:
        raise StackMFFError("the photo bank is empty; create one with `stackmff photos DIR`")
    if n_leaves[0] < 0 or n_leaves[1] < n_leaves[0]:
        raise StackMFFError(f"n_leaves must be a range (lo, hi) with 0 <= lo <= hi, got {n_leaves}.")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    h, w = int(height), int(width)
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :]
    gx, gy = rng.uniform(-slant, slant, 2)
    disp = np.broadcast_to(np.float32(rng.uniform(0.0, 0.3)) + np.float32(gx) * xx + np.float32(gy) * yy, (h, w))
    disp = disp.copy()
    image = _photo_patch(h, w, bank, rng)

    n = int(rng.integers(n_leaves[0], n_leaves[1] + 1))
    for d in np.sort(rng.uniform(0.1, 1.0, n)):  # far -> near: painter's algorithm gives exact occlusion
        shape = None
        for _ in range(4):
            shape = _disc_leaf(h, w, rng) if rng.random() < disc_share else _shape_mask(h, w, rng)
            if shape is not None:
                break
        if shape is None:
            continue
        m, (y0, y1, x0, x1) = shape
        sel = m.astype(bool)
        od = np.full(m.shape, d, np.float32)
        if rng.random() < 0.5:
            sx, sy = rng.uniform(-slant, slant, 2) * 0.5
            od += np.float32(sx) * xx[:, x0:x1] + np.float32(sy) * yy[y0:y1]
        region = disp[y0:y1, x0:x1]
        keep = sel & (od > region)
        if not keep.any():
            continue
        tex = _photo_patch(y1 - y0, x1 - x0, bank, rng)
        if rng.random() < specular_prob:
            _speculars(tex, rng)
        region[keep] = od[keep]
        image[y0:y1, x0:x1][keep] = tex[keep]

    disp = _fit_disparity(disp, min_disparity_range)
    return RGBDScene(image=np.ascontiguousarray(image.transpose(2, 0, 1)), disparity=disp, name="photos")
