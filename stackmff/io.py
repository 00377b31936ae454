"""Reading and writing focal stacks, single images and benchmark dataset trees.

Shape and dtype vocabulary used everywhere in the project:

- a stack is ``(N, C, H, W)`` float32 in [0, 1] (N focal slices, C = 1 or 3, RGB order, channels first);
- a batch of stacks is ``(B, N, C, H, W)``;
- a single image is ``(C, H, W)``; an index map (source layer per pixel) is ``(H, W)`` integer.

Conversion from the integer pixel types of files (uint8, uint16) happens only here. Values are scaled by
``1 / (2**bits - 1)`` so that an exact source value survives the round trip ``load -> gather -> save`` bit for bit
(float32 represents every 16-bit integer exactly).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from ._checks import StackMFFError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CompactLayer",
    "CompactStack",
    "PairScene",
    "Stack",
    "StackScene",
    "find_pair_scenes",
    "find_stack_scenes",
    "from_uint",
    "load_image",
    "load_stack",
    "natural_key",
    "read_image_file",
    "save_image",
    "to_uint",
]

log = logging.getLogger("stackmff")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
STACK_DIR_NAMES = ("dof_stack", "image stack", "image_stack", "focus_stack")
GT_DIR_NAMES = ("AiF", "aif", "AIF", "gt", "GT")

# Pillow refuses images above ~179 MP by default ("decompression bomb"); focus stacks from modern cameras and
# stitched microscopy can legitimately exceed that, so the limit is raised to 1 gigapixel.
Image.MAX_IMAGE_PIXELS = 1_000_000_000


def natural_key(path: str | os.PathLike) -> list:
    """Sort key ordering file names naturally: ``2.png`` before ``10.png``."""
    name = Path(path).name
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class Stack:
    """A loaded focal stack.

    Attributes:
        images: ``(N, C, H, W)`` float32 in [0, 1].
        paths: source file of each layer (a multi-page TIFF repeats its path).
        bit_depth: 8 or 16, the largest bit depth among the source files; outputs default to it.
    """

    images: np.ndarray
    paths: list[Path] = field(default_factory=list)
    bit_depth: int = 8

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return int(self.images.shape[2]), int(self.images.shape[3])


class CompactLayer:
    """One layer of a :class:`CompactStack`: decoded integer pixels presented as ``(C, H, W)`` float32 in [0, 1].

    Indexing converts only the selected pixels (``layer[:, y0:y1]`` is a float32 array of those rows), exactly as
    :func:`from_uint` converts the whole image; ``np.asarray(layer)`` converts all of it.
    """

    ndim = 3
    dtype = np.dtype(np.float32)

    def __init__(self, raw: np.ndarray, scale: float, channels: int) -> None:
        self._raw = raw  # (1 or C, H, W) view of the decoded image; a gray layer is broadcast to C channels
        self._scale = np.float32(scale)
        self.shape = (channels, int(raw.shape[1]), int(raw.shape[2]))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        raw = self._raw if self._raw.shape[0] == self.shape[0] else np.broadcast_to(self._raw, self.shape)
        return np.divide(raw[idx], self._scale, dtype=np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def transpose(self, *axes) -> np.ndarray:
        return np.asarray(self).transpose(*axes)

    @property
    def nbytes(self) -> int:
        return int(self._raw.nbytes)


class CompactStack:
    """A focal stack kept as its decoded 8/16-bit pixels (1/4 or 1/2 of float32), converted per layer and region.

    It presents the ``(N, C, H, W)`` float32 interface that :func:`stackmff.models.inference.fuse_stack_v3` and
    :func:`stackmff.align.align_stack` read from (``shape``, ``len``, ``stack[k]`` -> :class:`CompactLayer`), so the
    learned methods fuse a 10 × 12 MP 8-bit stack from 360 MB of pixels instead of 1.44 GB. ``np.asarray(stack)``
    converts everything (what the classical methods would need anyway).
    """

    ndim = 4
    dtype = np.dtype(np.float32)

    def __init__(self, layers: list[CompactLayer]) -> None:
        self.layers = layers
        self.shape = (len(layers), *layers[0].shape)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, idx):
        if isinstance(idx, (int, np.integer)):
            return self.layers[int(idx)]
        if isinstance(idx, slice) or (isinstance(idx, (list, np.ndarray)) and np.ndim(idx) == 1):
            picked = self.layers[idx] if isinstance(idx, slice) else [self.layers[int(i)] for i in idx]
            return CompactStack(picked)
        return np.asarray(self)[idx]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.empty(self.shape, np.float32)
        for k, layer in enumerate(self.layers):
            out[k] = layer[:, :, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return np.asarray(self, dtype=dtype)

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)


def from_uint(image: np.ndarray) -> tuple[np.ndarray, int]:
    """Convert an integer image to float32 in [0, 1]; return it with its bit depth (8 or 16).

    Float inputs are clipped to [0, 1] and reported as 16-bit only if they came as such (here: 8).
    """
    if image.dtype == np.uint8:
        return image.astype(np.float32) / np.float32(255.0), 8
    if image.dtype == np.uint16:
        return image.astype(np.float32) / np.float32(65535.0), 16
    if image.dtype == bool:
        return image.astype(np.float32), 8
    if np.issubdtype(image.dtype, np.integer):
        # e.g. int32 "I" mode images from Pillow holding 16-bit data
        return np.clip(image, 0, 65535).astype(np.float32) / np.float32(65535.0), 16
    if np.issubdtype(image.dtype, np.floating):
        return np.clip(image.astype(np.float32), 0.0, 1.0), 8
    raise StackMFFError(f"unsupported pixel type {image.dtype}; convert the image to 8 or 16-bit.")


def to_uint(image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Convert float image(s) in [0, 1] to uint8/uint16 with rounding (inverse of :func:`from_uint`)."""
    if bit_depth not in (8, 16):
        raise StackMFFError(f"bit_depth must be 8 or 16, got {bit_depth}.")
    scale = 255.0 if bit_depth == 8 else 65535.0
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.rint(np.clip(image, 0.0, 1.0) * scale).astype(dtype)


def _png_bit_depth(path: Path) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return 8
    return int(head[24])


def read_image_file(path: str | os.PathLike) -> tuple[list[np.ndarray], bool]:
    """Decode one image file into integer HxW or HxWxC arrays (RGB order).

    Returns a list because a multi-page TIFF holds several layers, and whether an alpha channel was dropped.
    EXIF orientation is applied. Raises :class:`StackMFFError` naming the file if it cannot be decoded.
    """
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext in (".tif", ".tiff"):
            return _read_tiff(path)
        if ext == ".png" and _png_bit_depth(path) == 16:
            arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise OSError("decoder failed")
            had_alpha = arr.ndim == 3 and arr.shape[2] == 4
            if arr.ndim == 3:
                arr = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)
            return [arr], had_alpha
        with Image.open(path) as im:
            im.load()  # forces a full decode: truncated files raise here instead of yielding grey blocks
            im = ImageOps.exif_transpose(im)
            return [_pil_to_array(im)[0]], _pil_has_alpha(im)
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, tifffile.TiffFileError, cv2.error) as exc:
        raise StackMFFError(
            f"cannot read {path}: not a valid image or truncated ({type(exc).__name__}); re-export it or remove it"
        ) from None


def _pil_has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info)


def _pil_to_array(im: Image.Image) -> tuple[np.ndarray, bool]:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(im, dtype=np.uint16), False
    if mode == "I":
        arr = np.asarray(im)
        return (arr.astype(np.uint16) if arr.max(initial=0) <= 65535 else arr), False
    if mode == "F":
        return np.asarray(im, dtype=np.float32), False
    if mode in ("1", "L"):
        return np.asarray(im.convert("L")), False
    if mode == "LA":
        return np.asarray(im.convert("L")), True
    return np.asarray(im.convert("RGB")), _pil_has_alpha(im)


def _read_tiff(path: Path) -> tuple[list[np.ndarray], bool]:
    try:
        with tifffile.TiffFile(path) as tf:
            pages = [p.asarray() for p in tf.pages]
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
        # LZW/JPEG/... TIFFs (what OpenCV and many cameras write) need imagecodecs in tifffile; OpenCV's libtiff
        # decodes them, all pages, 8 or 16 bit
        ok, mats = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
        if not ok or not mats:
            raise OSError("decoder failed") from None
        codes = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
        pages = [cv2.cvtColor(m, codes[m.shape[2]]) if m.ndim == 3 and m.shape[2] in codes else m for m in mats]
    out: list[np.ndarray] = []
    had_alpha = False
    for arr in pages:
        arr = np.asarray(arr)
        # a single page may itself hold a z-stack (Z, H, W) written by ImageJ
        if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] > 1:
            out.extend(arr[i] for i in range(arr.shape[0]))
            continue
        if arr.ndim == 3 and arr.shape[-1] == 4:
            arr = arr[..., :3]
            had_alpha = True
        elif arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        out.append(arr)
    if not out:
        raise OSError("no pages")
    return out, had_alpha


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Load one image as ``(C, H, W)`` float32 in [0, 1] and its bit depth; a multi-page TIFF gives its first page."""
    arrays, had_alpha = read_image_file(path)
    if had_alpha:
        log.warning("%s: alpha channel dropped", path)
    img, bits = from_uint(arrays[0])
    return (img[None] if img.ndim == 2 else img.transpose(2, 0, 1)).copy(), bits


def _collect_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not items:
        raise StackMFFError("no input given; pass a folder of images or at least two image files")
    files: list[Path] = []
    skipped: list[str] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            entries = sorted((q for q in p.iterdir() if q.is_file() and not q.name.startswith(".")), key=natural_key)
            for q in entries:
                if q.suffix.lower() in IMAGE_EXTENSIONS:
                    files.append(q)
                else:
                    skipped.append(q.name)
        elif p.is_file():
            if p.suffix.lower() in IMAGE_EXTENSIONS:
                files.append(p)
            else:
                skipped.append(p.name)
        else:
            raise StackMFFError(f"input not found: {p}; check the path")
    if skipped:
        log.warning("skipped %d non-image file(s): %s", len(skipped), ", ".join(map(str, skipped)))
    if not files:
        where = ", ".join(str(i) for i in items)
        raise StackMFFError(f"no images found in {where}; expected PNG, JPEG, TIFF, BMP or WebP files")
    return files


def _available_memory() -> int | None:
    """Bytes of memory the kernel says can be allocated without swapping (Linux ``MemAvailable``), else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(nbytes: int, what: str) -> None:
    """Refuse, with a one-line error, an allocation that cannot fit in the memory available now."""
    avail = _available_memory()
    if avail is not None and nbytes > avail:
        raise StackMFFError(
            f"the stack ({what}) needs {nbytes / 2**30:.1f} GiB as float32 but only {avail / 2**30:.1f} GiB of memory "
            "is available; fuse fewer layers at a time, downscale the images, or free memory"
        )


def load_stack(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    color: str = "auto",
    min_layers: int = 2,
    compact: bool = False,
) -> Stack:
    """Load a focal stack from a folder, a list of files or a multi-page TIFF.

    Args:
        inputs: a folder (its images in natural file-name order), image files (in the given order), or both.
        color: ``"auto"`` (RGB if any layer is colour, else gray), ``"rgb"`` or ``"gray"``.
        min_layers: fewest layers accepted.
        compact: keep the decoded 8/16-bit pixels in a :class:`CompactStack` (same values once converted) instead
            of a float32 array; for the learned methods, which read the stack region by region.

    Returns:
        :class:`Stack` with ``images`` of shape ``(N, C, H, W)`` float32 in [0, 1] (or a :class:`CompactStack`).

    Raises:
        StackMFFError: missing/empty input, too few layers, unreadable files or layers of different sizes.
    """
    if color not in ("auto", "rgb", "gray"):
        raise StackMFFError(f"color must be one of auto, rgb, gray; got {color!r}")
    files = _collect_files(inputs)
    layers: list[np.ndarray] = []
    paths: list[Path] = []
    bits = 8
    alpha_files: list[str] = []
    for f in files:
        arrays, had_alpha = read_image_file(f)
        if had_alpha:
            alpha_files.append(f.name)
        for arr in arrays:  # kept decoded (uint8/16: 1/4 or 1/2 of float32) until the stack is allocated
            layers.append(arr)
            paths.append(f)
    if alpha_files:
        log.warning("alpha channel dropped from %d layer(s): %s", len(alpha_files), ", ".join(alpha_files))
    if len(layers) < min_layers:
        raise StackMFFError(
            f"a focal stack needs at least {min_layers} layers, found {len(layers)} in {files[0].parent}; "
            "add the other focus slices"
        )
    sizes = {img.shape[:2] for img in layers}
    if len(sizes) > 1:
        by_size: dict[tuple[int, int], str] = {}
        for img, p in zip(layers, paths):
            by_size.setdefault(img.shape[:2], p.name)
        desc = ", ".join(f"{n} is {w}x{h}" for (h, w), n in by_size.items())
        raise StackMFFError(f"layers have different sizes ({desc}); resize or crop them to one size first")
    any_color = any(img.ndim == 3 for img in layers)
    want_rgb = color == "rgb" or (color == "auto" and any_color)
    h, w = layers[0].shape[:2]
    shape = (len(layers), 3 if want_rgb else 1, h, w)
    if compact:
        images, bits = _compact(layers, shape[1])
        return Stack(images=images, paths=paths, bit_depth=bits)
    _check_memory(int(np.prod(shape)) * 4, f"{shape[0]} layers of {w}x{h}")
    out = np.empty(shape, dtype=np.float32)
    for i, arr in enumerate(layers):
        bits = max(bits, _into_float(arr, out[i], rgb=want_rgb))
        layers[i] = None  # type: ignore[call-overload]  # release the decoded layer as soon as it is converted
    return Stack(images=out, paths=paths, bit_depth=bits)


def _integer_source(arr: np.ndarray) -> tuple[np.ndarray, float, int]:
    """A decoded ``(H, W)`` / ``(H, W, 3)`` layer as ``(C, H, W)`` pixels, the divisor that maps them to [0, 1] as
    :func:`from_uint` does, and the bit depth; a view when the pixels are stored as they are (8/16-bit, bool)."""
    if arr.dtype == np.uint8:
        scale, bits = 255.0, 8
    elif arr.dtype == np.bool_:
        arr, scale, bits = arr.view(np.uint8), 1.0, 8
    elif arr.dtype == np.uint16:
        scale, bits = 65535.0, 16
    elif np.issubdtype(arr.dtype, np.integer):
        arr, scale, bits = np.clip(arr, 0, 65535).astype(np.uint16), 65535.0, 16
    elif np.issubdtype(arr.dtype, np.floating):
        arr, scale, bits = np.clip(arr, 0.0, 1.0).astype(np.float32, copy=False), 1.0, 8
    else:
        raise StackMFFError(f"unsupported pixel type {arr.dtype}; convert the image to 8 or 16-bit.")
    return (arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)), scale, bits


def _compact(layers: list[np.ndarray], channels: int) -> tuple[CompactStack, int]:
    """Wrap decoded layers without converting them (same values as :func:`_into_float`); returns the bit depth."""
    out, bits = [], 8
    for arr in layers:
        if arr.ndim == 3 and channels == 1:  # colour layer into a gray stack (color="gray"): converted now
            bits = max(bits, from_uint(arr[:1, :1])[1])
            arr = cv2.cvtColor(from_uint(arr)[0], cv2.COLOR_RGB2GRAY)
        raw, scale, b = _integer_source(arr)
        bits = max(bits, b)
        out.append(CompactLayer(raw, scale, channels))  # a gray layer is broadcast to RGB when read
    return CompactStack(out), bits


def _into_float(arr: np.ndarray, out: np.ndarray, *, rgb: bool) -> int:
    """Write a decoded ``(H, W)`` / ``(H, W, 3)`` layer into ``out`` ``(C, H, W)`` float32 exactly as
    :func:`from_uint` converts it, without a float temporary of the whole layer; returns its bit depth."""
    if arr.ndim == 3 and not rgb:  # colour layer into a gray stack (only with color="gray")
        out[0] = cv2.cvtColor(from_uint(arr)[0], cv2.COLOR_RGB2GRAY)
        return from_uint(arr[:1, :1])[1]
    src, scale, bits = _integer_source(arr)  # a gray layer broadcasts into every channel
    np.divide(src, np.float32(scale), out=out, dtype=np.float32, casting="unsafe")
    return bits


def save_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    bit_depth: int = 8,
    overwrite: bool = False,
    quality: int = 95,
) -> Path:
    """Write a ``(C, H, W)`` or ``(H, W)`` float image in [0, 1] atomically (temp file in the same folder + rename).

    PNG and TIFF keep 16-bit data; JPEG, BMP and WebP are 8-bit (16-bit requests are reduced with a warning).
    The parent folder is created. An existing file is refused unless ``overwrite``.

    Raises:
        StackMFFError: unknown extension, or the file exists and ``overwrite`` is false.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise StackMFFError(
            f"output {path} has unknown extension {ext or '(none)'}; use .png, .jpg, .tif, .bmp or .webp"
        )
    if path.exists() and not overwrite:
        raise StackMFFError(f"output {path} exists; pass --overwrite to replace it or choose another name")
    if ext in (".jpg", ".jpeg", ".bmp", ".webp") and bit_depth == 16:
        log.warning("%s cannot hold 16-bit data; writing 8-bit (use .png or .tif to keep 16 bits)", path.name)
        bit_depth = 8
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0)
    if np.issubdtype(arr.dtype, np.floating):
        arr = to_uint(arr, bit_depth)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=ext, dir=path.parent)
    os.close(fd)
    try:
        if ext in (".tif", ".tiff"):
            tifffile.imwrite(tmp, arr, photometric="rgb" if arr.ndim == 3 else "minisblack", compression="zlib")
        else:
            bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
            params: list[int] = []
            if ext in (".jpg", ".jpeg"):
                params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
            elif ext == ".webp":
                params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
            if not cv2.imwrite(tmp, bgr, params):
                raise StackMFFError(f"could not encode {path}; check the extension and free disk space")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --------------------------------------------------------------------------------------------------------------
# Benchmark dataset trees
# --------------------------------------------------------------------------------------------------------------


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
