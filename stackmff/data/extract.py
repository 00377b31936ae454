"""Extract training images (and NYU depth) from the official dataset downloads, as the upstream scripts prepare them.

Each extractor reads the official layout from a folder, a ``.zip`` or a ``.tar[.gz|.bz2|.xz]`` archive (tar members
are streamed; zip members are read one at a time; nothing is unpacked wholesale) and writes a flat folder::

    <out>/<DATASET>/images/<name>.<ext>      # RGB images
    <out>/<DATASET>/depth/<name>.png         # NYU only: 8-bit depth, per-image min-max to 0..255 (larger = farther)

- ADE20K: every ``.jpg`` under ``images/training`` and ``images/validation`` (ADEChallengeData2016 or the full
  ADE20K release), bytes copied.
- DUTS: ``DUTS-TR-Image`` / ``DUTS-TE-Image`` ``.jpg``; images whose most frequent exact RGB colour covers >= 20 % of
  the pixels ("uniform background") are rejected.
- DIODE: every RGB ``.png`` that has a ``<stem>_depth.npy`` next to it, re-encoded to JPEG (its depth is NOT used:
  upstream takes depth from Depth Anything V2).
- NYU Depth V2: the labeled ``nyu_depth_v2_labeled.mat`` (HDF5), images and depth centre-cropped to 460x620, depth
  min-max normalised to 0..255 per image; a seeded random 100 images go to ``NYU_Depth_V2_test`` instead.
- Cityscapes: ``leftImg8bit/{train,val,test}/<city>/*.png`` flattened, bytes copied.

Writes are atomic and an existing output is skipped, so an interrupted extraction resumes.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from .._checks import check_choice
from ..errors import StackMFFError
from ..io import atomic_write

__all__ = ["DATASETS", "extract_dataset", "is_uniform_background"]

log = logging.getLogger("stackmff")

DATASETS: dict[str, str] = {
    "ADE20K": "ADEChallengeData2016.zip from http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip "
    "(or the full ADE20K release from https://ade20k.csail.mit.edu/)",
    "DUTS": "DUTS-TR.zip and/or DUTS-TE.zip from http://saliencydetection.net/duts/",
    "DIODE": "train.tar.gz / val.tar.gz from https://diode-dataset.org/",
    "NYU_Depth_V2": "nyu_depth_v2_labeled.mat from http://horatio.cs.nyu.edu/mit/silberman/nyu_depth_v2/nyu_depth_v2_labeled.mat",
    "Cityscapes": "leftImg8bit_trainvaltest.zip from https://www.cityscapes-dataset.com/downloads/ (login required)",
}

NYU_CROP = (460, 620)
NYU_TEST_COUNT = 100


def is_uniform_background(rgb: np.ndarray, *, threshold: float = 0.2) -> bool:
    """True if the most frequent exact RGB colour covers at least ``threshold`` of the pixels (upstream DUTS filter).

    Args:
        rgb: ``(H, W, 3)`` uint8 image.
        threshold: fraction of pixels.
    """
    flat = rgb.reshape(-1, rgb.shape[-1]).astype(np.uint32)
    codes = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
    counts = np.bincount(codes, minlength=1) if codes.size else np.zeros(1)
    return bool(codes.size and counts.max() >= threshold * codes.size)


# ---------------------------------------------------------------------------------------------------- sources


def _iter_members(src: Path) -> Iterator[tuple[str, Callable[[], bytes]]]:
    """``(posix path, read)`` for every file in a folder, zip or tar (tar: streamed; read only while current)."""
    if src.is_dir():
        for p in sorted(src.rglob("*")):
            if p.is_file():
                yield p.relative_to(src).as_posix(), p.read_bytes
    elif zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, (lambda info=info: zf.read(info))
    elif tarfile.is_tarfile(src):
        with tarfile.open(src, mode="r|*") as tf:  # stream: one pass, no random access
            for m in tf:
                if m.isfile():
                    f = tf.extractfile(m)
                    yield m.name, (lambda f=f: f.read())
    else:
        raise StackMFFError(f"{src} is not a folder, zip or tar archive; pass the official download")


def _encode(path: Path, rgb: np.ndarray, quality: int = 95) -> None:
    ext = path.suffix.lower()
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:  # pragma: no cover
        raise StackMFFError(f"cannot encode {path}")
    with atomic_write(path, overwrite=True) as f:
        f.write(buf.tobytes())


def _decode(data: bytes) -> np.ndarray | None:
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if arr is None else cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def _sources(src: Path) -> list[Path]:
    """A folder holding several official archives (e.g. DUTS-TR.zip + DUTS-TE.zip) is read archive by archive."""
    if src.is_dir():
        archives = sorted(p for p in src.iterdir() if p.is_file() and (p.suffix == ".zip" or ".tar" in p.name))
        return archives or [src]
    return [src]


# ---------------------------------------------------------------------------------------------------- extractors


def _copy_matching(src: Path, out: Path, keep: Callable[[PurePosixPath], bool], *, duts: bool = False) -> dict:
    written = skipped = rejected = 0
    for s in _sources(src):
        for name, read in _iter_members(s):
            p = PurePosixPath(name)
            if not keep(p):
                continue
            dst = out / "images" / p.name
            if dst.exists():
                skipped += 1
                continue
            data = read()
            if duts:
                rgb = _decode(data)
                if rgb is None or is_uniform_background(rgb):
                    rejected += 1
                    continue
            with atomic_write(dst, overwrite=True) as f:
                f.write(data)
            written += 1
    return {"written": written, "skipped": skipped, "rejected": rejected}


def _ade(p: PurePosixPath) -> bool:
    parts = p.parts
    return p.suffix.lower() == ".jpg" and "images" in parts and ("training" in parts or "validation" in parts)


def _duts(p: PurePosixPath) -> bool:
    return p.suffix.lower() == ".jpg" and any(part.endswith("-Image") for part in p.parts)


def _cityscapes(p: PurePosixPath) -> bool:
    parts = p.parts
    return (
        p.suffix.lower() == ".png"
        and "leftImg8bit" in parts
        and any(s in parts for s in ("train", "val", "test", "train_extra"))
    )


def _diode(src: Path, out: Path) -> dict:
    written = skipped = 0
    pending: dict[str, bytes] = {}  # RGB seen before its depth file in the stream
    with_depth: set[str] = set()

    def emit(key: str, data: bytes) -> None:
        nonlocal written, skipped
        dst = out / "images" / (PurePosixPath(key).name + ".jpg")
        if dst.exists():
            skipped += 1
            return
        rgb = _decode(data)
        if rgb is not None:
            _encode(dst, rgb)
            written += 1

    for s in _sources(src):
        for name, read in _iter_members(s):
            p = PurePosixPath(name)
            if p.name.endswith("_depth.npy"):
                key = str(p.parent / p.name[: -len("_depth.npy")])
                with_depth.add(key)
                if key in pending:
                    emit(key, pending.pop(key))
            elif p.suffix.lower() == ".png":
                key = str(p.with_suffix(""))
                if key in with_depth:
                    emit(key, read())
                else:
                    pending[key] = read()
    return {"written": written, "skipped": skipped, "rejected": len(pending)}


def _find_nyu_mat(src: Path) -> Path:
    if src.is_file() and src.suffix == ".mat":
        return src
    if src.is_dir():
        hits = sorted(src.rglob("nyu_depth_v2_labeled.mat")) or sorted(src.rglob("*.mat"))
        if hits:
            return hits[0]
    raise StackMFFError(f"no nyu_depth_v2_labeled.mat at {src}; download {DATASETS['NYU_Depth_V2'].split(' from ')[1]}")


def _nyu(src: Path, out_root: Path, seed: int, test_count: int) -> dict:
    import h5py

    mat = _find_nyu_mat(src)
    ch, cw = NYU_CROP
    written = skipped = 0
    with h5py.File(mat, "r") as f:
        if "images" not in f or "depths" not in f:
            raise StackMFFError(f"{mat} lacks 'images'/'depths'; use the LABELED NYU Depth V2 file (HDF5, v7.3)")
        images, depths = f["images"], f["depths"]
        n = images.shape[0]
        test = set(np.random.default_rng(seed).choice(n, size=min(test_count, n), replace=False).tolist())
        for i in range(n):
            ds = "NYU_Depth_V2_test" if i in test else "NYU_Depth_V2"
            img_path = out_root / ds / "images" / f"{i:04d}.jpg"
            dep_path = out_root / ds / "depth" / f"{i:04d}.png"
            if img_path.exists() and dep_path.exists():
                skipped += 1
                continue
            # MATLAB column-major: h5py sees (3, W, H) and (W, H)
            rgb = np.ascontiguousarray(np.asarray(images[i]).transpose(2, 1, 0))
            depth = np.asarray(depths[i], dtype=np.float64).T
            h, w = depth.shape
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            rgb, depth = rgb[y0 : y0 + ch, x0 : x0 + cw], depth[y0 : y0 + ch, x0 : x0 + cw]
            lo, hi = float(depth.min()), float(depth.max())
            d8 = np.rint((depth - lo) / max(hi - lo, 1e-12) * 255.0).astype(np.uint8)
            _encode(dep_path, d8)
            _encode(img_path, rgb)
            written += 1
    return {"written": written, "skipped": skipped, "rejected": 0, "test": len(test)}


def extract_dataset(
    name: str,
    src: str | os.PathLike,
    out_root: str | os.PathLike,
    *,
    seed: int = 0,
    nyu_test_count: int = NYU_TEST_COUNT,
) -> dict:
    """Extract one dataset from its official download into ``<out_root>/<name>/images`` (+ ``depth`` for NYU).

    Args:
        name: one of :data:`DATASETS` (``ADE20K``, ``DUTS``, ``DIODE``, ``NYU_Depth_V2``, ``Cityscapes``).
        src: the official archive, a folder holding the archive(s), or the unpacked folder.
        out_root: output root.
        seed: NYU test-split seed.
        nyu_test_count: NYU images held out for testing (upstream: 100).

    Returns:
        Counts ``{"written", "skipped", "rejected"}`` (rejected: DUTS uniform backgrounds, DIODE images without depth).

    Raises:
        StackMFFError: the source is missing (the message names the expected download) or unreadable.
    """
    check_choice(name, tuple(DATASETS), "dataset")
    src = Path(src)
    if not src.exists():
        raise StackMFFError(f"{name} raw data not found at {src}; download {DATASETS[name]} and pass its path")
    out = Path(out_root) / name
    if name == "NYU_Depth_V2":
        stats = _nyu(src, Path(out_root), seed, nyu_test_count)
    elif name == "DIODE":
        stats = _diode(src, out)
    else:
        keep = {"ADE20K": _ade, "DUTS": _duts, "Cityscapes": _cityscapes}[name]
        stats = _copy_matching(src, out, keep, duts=name == "DUTS")
    if stats["written"] + stats["skipped"] == 0:
        raise StackMFFError(f"no {name} images found in {src}; expected the official layout of {DATASETS[name]}")
    log.info("%s: %s", name, stats)
    return stats
