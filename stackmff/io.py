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

import contextlib
import io
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import StackMFFError

__all__ = [
    "IMAGE_EXTENSIONS",
    "CompactLayer",
    "CompactStack",
    "OutputSet",
    "PairScene",
    "Stack",
    "StackScene",
    "check_output_path",
    "check_writable_folder",
    "collect_files",
    "find_pair_scenes",
    "find_stack_scenes",
    "from_uint",
    "load_image",
    "load_stack",
    "natural_key",
    "read_image_file",
    "save_image",
    "sweep_stale_temps",
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


def _png_orientation(path: Path) -> int:
    """EXIF orientation (1..8) from a PNG's ``eXIf`` chunk before the image data, else 1."""
    import struct

    with open(path, "rb") as f:
        f.seek(8)
        while True:
            head = f.read(8)
            if len(head) < 8:
                return 1
            length, kind = struct.unpack(">I4s", head)
            if kind == b"IDAT" or kind == b"IEND":
                return 1
            if kind == b"eXIf":
                exif = Image.Exif()
                exif.load(f.read(length))
                return int(exif.get(274, 1) or 1)
            f.seek(length + 4, 1)


def _orient(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1..8) to an ``(H, W[, C])`` array as :func:`PIL.ImageOps.exif_transpose` does."""
    ops = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    op = ops.get(int(orientation))
    return np.ascontiguousarray(op(arr)) if op else arr


@contextlib.contextmanager
def _native_messages(path: Path):
    """Catch what C decoders (libpng, libtiff inside OpenCV) print on file descriptor 2 while reading ``path``; our
    own error says what is wrong, their text is logged at debug level (``-vv``)."""
    try:
        saved = os.dup(2)
        sink = tempfile.TemporaryFile()
    except OSError:
        yield
        return
    try:
        sys.stderr.flush()
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        text = sink.read().decode(errors="replace").strip()
        sink.close()
        if text:
            log.debug("%s: decoder said: %s", path, " | ".join(text.splitlines()))


def _check_decoded_size(path: Path, width: int, height: int, channels: int, itemsize: int) -> None:
    """Refuse before decoding an image whose header claims more pixels than can be held (decompression bomb)."""
    nbytes = int(width) * int(height) * max(int(channels), 1) * max(int(itemsize), 1)
    avail = _available_memory()
    if width * height > Image.MAX_IMAGE_PIXELS or (avail is not None and nbytes > avail):
        raise StackMFFError(
            f"{path} claims {width}x{height} pixels ({nbytes / 2**30:.1f} GiB decoded), more than this machine can "
            "hold; it is damaged or not a photo: remove it or downscale it"
        )


def read_image_file(path: str | os.PathLike) -> tuple[list[np.ndarray], bool]:
    """Decode one image file into integer HxW or HxWxC arrays (RGB order).

    Returns a list because a multi-page TIFF holds several layers, and whether an alpha channel was dropped.
    EXIF orientation is applied (JPEG, PNG of 8 and 16 bits, TIFF Orientation tag). A header claiming more pixels
    than memory holds is refused before decoding. Raises :class:`StackMFFError` naming the file if it cannot be
    decoded.
    """
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext in (".tif", ".tiff"):
            return _read_tiff(path)
        if ext == ".png":
            with open(path, "rb") as f:
                head = f.read(26)
            if len(head) == 26 and head[12:16] == b"IHDR":
                w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
                _check_decoded_size(path, w, h, 4, 2 if head[24] == 16 else 1)
        if ext == ".png" and _png_bit_depth(path) == 16:
            with _native_messages(path):
                arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if arr is None:
                raise OSError("decoder failed")
            had_alpha = arr.ndim == 3 and arr.shape[2] == 4
            if arr.ndim == 3:
                arr = cv2.cvtColor(arr[..., :3], cv2.COLOR_BGR2RGB)
            return [_orient(arr, _png_orientation(path))], had_alpha
        with Image.open(path) as im:
            _check_decoded_size(path, im.width, im.height, len(im.getbands()), 4 if im.mode in ("I", "F") else 1)
            im.load()  # forces a full decode: truncated files raise here instead of yielding grey blocks
            im = ImageOps.exif_transpose(im)
            return [_pil_to_array(im)[0]], _pil_has_alpha(im)
    except StackMFFError:
        raise
    except Image.DecompressionBombError:
        raise StackMFFError(
            f"{path} claims more pixels than any photo (over {2 * Image.MAX_IMAGE_PIXELS / 1e9:.0f} gigapixels); it is "
            "damaged or not a photo: remove it"
        ) from None
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
    orientations: list[int] = []
    try:
        with tifffile.TiffFile(path) as tf:
            for p in tf.pages:
                _check_decoded_size(path, *_tiff_page_size(p))
            orientations = [int(getattr(p.tags.get(274), "value", 1) or 1) for p in tf.pages]
            pages = [p.asarray() for p in tf.pages]
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
        # LZW/JPEG/... TIFFs (what OpenCV and many cameras write) need imagecodecs in tifffile; OpenCV's libtiff
        # decodes them, all pages, 8 or 16 bit
        with _native_messages(path):
            ok, mats = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
        if not ok or not mats:
            raise OSError("decoder failed") from None
        codes = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
        pages = [cv2.cvtColor(m, codes[m.shape[2]]) if m.ndim == 3 and m.shape[2] in codes else m for m in mats]
    out: list[np.ndarray] = []
    had_alpha = False
    for k, arr in enumerate(pages):
        arr = np.asarray(arr)
        if k < len(orientations) and arr.ndim in (2, 3) and not (arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4)):
            arr = _orient(arr, orientations[k])
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


def _tiff_page_size(page) -> tuple[int, int, int, int]:
    """``(width, height, samples x planes, bytes per sample)`` a TIFF page claims, without decoding it."""
    shape = tuple(int(v) for v in page.shape)
    h, w = (shape[-3], shape[-2]) if len(shape) >= 3 and shape[-1] in (1, 3, 4) else shape[-2:]
    rest = int(np.prod(shape)) // max(h * w, 1)
    return w, h, rest, int(np.dtype(page.dtype).itemsize) if page.dtype is not None else 1


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Load one image as ``(C, H, W)`` float32 in [0, 1] and its bit depth; a multi-page TIFF gives its first page."""
    arrays, had_alpha = read_image_file(path)
    if had_alpha:
        log.warning("%s: alpha channel dropped", path)
    img, bits = from_uint(_normalise_types(arrays[:1], [Path(path).name])[0])
    return (img[None] if img.ndim == 2 else img.transpose(2, 0, 1)).copy(), bits


def collect_files(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
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
    files = collect_files(inputs)
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
    layers = _normalise_types(layers, [p.name for p in paths])
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


def _normalise_types(layers: list[np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    """Bring every layer to a type whose range is known (uint8, uint16, float32 in [0, 1]), deciding the range once
    for the whole stack and saying so, so that no layer is silently blacked out, whitened or saturated.

    - float: NaN/inf are refused (naming the file); values within [0, 1] are read as they are, up to 255 as 0..255
      data, up to 65535 as 0..65535 (16-bit) data; larger values are refused; negative values are clipped to 0.
    - integers wider than 16 bits: kept as 16-bit data when the stack's maximum fits, else scaled down from the
      smallest bit depth that holds the maximum (e.g. 20-bit camera data) to 16 bits; negative values clipped.
    """
    floats = [i for i, a in enumerate(layers) if np.issubdtype(a.dtype, np.floating)]
    wide = [i for i, a in enumerate(layers) if np.issubdtype(a.dtype, np.integer) and a.dtype.itemsize > 2]
    wide += [i for i, a in enumerate(layers) if a.dtype in (np.int8, np.int16)]
    if not floats and not wide:
        return layers
    for i in floats:
        bad = int(np.count_nonzero(~np.isfinite(layers[i])))
        if bad:
            raise StackMFFError(
                f"{names[i]} has {bad} NaN or infinite pixel(s) of {layers[i].size}; replace them (e.g. with 0) "
                "or remove the layer"
            )
    out = list(layers)
    negative: list[str] = []
    if floats:
        top = max(float(layers[i].max(initial=0.0)) for i in floats)
        if top > 65535:
            raise StackMFFError(
                f"float pixels go up to {top:g} in {names[floats[0]]}; expected 0..1, 0..255 or 0..65535 data: "
                "rescale the images"
            )
        scale = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        if scale != 1.0:
            log.warning("float layers hold values up to %g: read as 0..%d data", top, int(scale))
        for i in floats:
            a = layers[i]
            if float(a.min(initial=0.0)) < 0:
                negative.append(names[i])
            if scale == 65535.0:
                out[i] = np.rint(np.clip(a, 0, 65535)).astype(np.uint16)
            elif scale == 255.0:
                out[i] = np.clip(a.astype(np.float32) / np.float32(255.0), 0.0, 1.0)
            else:
                out[i] = np.clip(a.astype(np.float32, copy=False), 0.0, 1.0)
    if wide:
        top = max(int(layers[i].max(initial=0)) for i in wide)
        bits = max(16, top.bit_length())
        if bits > 16:
            log.warning("integer pixels go up to %d: read as %d-bit data, scaled to 16 bits", top, bits)
        for i in wide:
            a = layers[i]
            if int(a.min(initial=0)) < 0:
                negative.append(names[i])
            a = np.clip(a, 0, None)
            if bits > 16:
                a = np.rint(a.astype(np.float64) * (65535.0 / (2**bits - 1)))
            out[i] = a.astype(np.uint16)
    if negative:
        log.warning("negative pixel values clipped to 0 in %d layer(s): %s", len(negative), ", ".join(negative[:5]))
    return out


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
    outputs: OutputSet | None = None,
) -> Path:
    """Write a ``(C, H, W)`` or ``(H, W)`` float image in [0, 1] atomically (temp file in the same folder + rename).

    PNG and TIFF keep 16-bit data; JPEG, BMP and WebP are 8-bit (16-bit requests are reduced with a warning).
    The image is encoded in memory and written with checked writes (a full disk raises, no truncated file is left).
    The parent folder is created. An existing file is refused unless ``overwrite``. With ``outputs`` the file is
    staged in that :class:`OutputSet` and appears only when the set is committed (with the command's other files).

    Raises:
        StackMFFError: unknown extension, the file exists and ``overwrite`` is false, or the encoder failed.
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
    data = _encode(arr, ext, quality, path)
    if outputs is not None:
        outputs.write_bytes(path, data)
        return path
    with OutputSet(overwrite=overwrite) as outs:
        outs.write_bytes(path, data)
    return path


def _encode(arr: np.ndarray, ext: str, quality: int, path: Path) -> bytes | memoryview:
    """The file bytes of an ``(H, W)`` / ``(H, W, 3)`` uint8/uint16 RGB array for extension ``ext``."""
    if ext in (".tif", ".tiff"):
        buf = io.BytesIO()
        tifffile.imwrite(buf, arr, photometric="rgb" if arr.ndim == 3 else "minisblack", compression="zlib")
        return buf.getbuffer()
    bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR) if arr.ndim == 3 else arr
    params: list[int] = []
    if ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, int(quality)]
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok or buf is None or buf.size == 0:
        raise StackMFFError(f"could not encode {path} as {ext}; choose .png or .tif")
    return memoryview(buf.reshape(-1))


# --------------------------------------------------------------------------------------------------------------
# Output files: temp file in the same folder, checked write, exclusive rename; all files of a command together
# --------------------------------------------------------------------------------------------------------------

TEMP_SUFFIX = ".stackmff-tmp"
_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[^.]+" + re.escape(TEMP_SUFFIX) + r"$")
_LEGACY_TEMP_RE = re.compile(r"^\..+\.tmp(\d+)$")  # `.last.pt.tmp<PID>` of earlier versions


def _file_mode() -> int:
    """``0o666`` less the process umask: what ``open()`` would give a new file (``mkstemp`` gives 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but is not ours
        return True
    return True


def sweep_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove temp files of our naming left in ``folder`` by a killed run (their process no longer exists)."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        m = _TEMP_RE.match(e.name) or _LEGACY_TEMP_RE.match(e.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                os.unlink(e.path)
                removed.append(Path(e.path))
            except OSError:
                pass
    if removed:
        log.info("removed %d stale temp file(s) of an interrupted run in %s", len(removed), folder)
    return removed


def check_output_path(path: str | os.PathLike, *, overwrite: bool = False, inputs: Iterable[Path] = ()) -> Path:
    """Refuse, before any work, an output path that cannot be written: an existing folder, an existing file without
    ``overwrite``, one of the ``inputs``, a parent that is a file, or a folder we may not create files in.

    Raises:
        StackMFFError: one line naming the path and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise StackMFFError(f"output {path} is a folder; give a file name such as {path / 'fused.png'}")
    real = path.resolve()
    for p in inputs:
        if Path(p).resolve() == real:
            raise StackMFFError(f"output {path} is one of the inputs; choose another output name")
    if path.exists() and not overwrite:
        raise StackMFFError(f"output {path} exists; pass --overwrite to replace it or choose another name")
    check_writable_folder(path.parent, f"output {path}")
    return path


def check_writable_folder(folder: str | os.PathLike, what: str) -> None:
    """Refuse a ``folder`` (existing or to be created) that cannot take our files: its nearest existing ancestor
    must be a folder in which we can create a file (probed with a temp file, removed at once)."""
    probe = Path(folder) if str(folder) else Path(".")
    while not probe.exists():
        if probe.is_symlink() or probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise StackMFFError(f"cannot write {what}: {probe} is a file, not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".probe.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise StackMFFError(
            f"cannot write {what}: {probe} does not accept new files ({why}); choose a folder you can write to"
        ) from None


class OutputSet:
    """The output files of one command, written all together or not at all.

    Each file is written to a temp file in its own folder (``.<name>.<pid>.<random>.stackmff-tmp``, created with the
    umask's permissions); :meth:`commit` then gives every file its final name, exclusively unless ``overwrite`` (a
    file that appeared meanwhile, e.g. from a concurrent run, is refused rather than replaced). Any failure, an
    exception or a signal (SIGINT, and SIGTERM through the CLI) removes the temp files and the files this set had
    already renamed. Stale temp files of killed runs are swept from the folders written to.

    Use as a context manager (commits on success)::

        with OutputSet(overwrite=False) as outs:
            outs.write_bytes(path_a, data)
            torch.save(obj, outs.temp(path_b))
    """

    def __init__(self, *, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._staged: list[tuple[Path, Path]] = []
        self._swept: set[Path] = set()
        self._made_dirs: list[Path] = []

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def temp(self, final: str | os.PathLike) -> Path:
        """A new empty temp file standing in for ``final`` (refused now if ``final`` exists without overwrite)."""
        final = Path(final)
        if final.is_dir():
            raise StackMFFError(f"output {final} is a folder; give a file name")
        if final.exists() and not self.overwrite:
            raise StackMFFError(f"output {final} exists; pass --overwrite to replace it or choose another name")
        if any(f == final for _, f in self._staged):
            raise StackMFFError(f"two outputs of this command are both {final}; give them different names")
        parent = final.parent
        missing = [d for d in (parent, *parent.parents) if not d.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        self._made_dirs.extend(missing)  # removed again (when empty) if the set is discarded
        if parent not in self._swept:
            self._swept.add(parent)
            sweep_stale_temps(parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=parent)
        try:
            os.fchmod(fd, _file_mode())
        finally:
            os.close(fd)
        self._staged.append((Path(tmp), final))
        return Path(tmp)

    def write_bytes(self, final: str | os.PathLike, data: bytes | memoryview) -> Path:
        """Write ``data`` for ``final``; write errors (disk full, quota) raise instead of leaving a short file."""
        tmp = self.temp(final)
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            self.discard()
            raise StackMFFError(
                f"could not write {final}: {exc.strerror or type(exc).__name__}; free disk space or choose another "
                "folder (nothing was written)"
            ) from None
        if tmp.stat().st_size != len(data):
            raise StackMFFError(f"writing {final} stopped short (disk full?); free disk space and rerun")
        return tmp

    def discard(self) -> None:
        """Remove every temp file not yet committed."""
        for tmp, _ in self._staged:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        self._staged.clear()
        for d in sorted(set(self._made_dirs), key=lambda p: len(p.parts), reverse=True):  # deepest first: the
            # folders this set created, if nothing else was put there
            try:
                d.rmdir()
            except OSError:
                pass
        self._made_dirs.clear()

    def commit(self) -> list[Path]:
        """Give every staged file its final name; on any failure nothing of this set remains."""
        created: list[Path] = []
        try:
            for tmp, final in self._staged:
                if self.overwrite:
                    if final.is_dir():
                        raise StackMFFError(f"output {final} is a folder; give a file name")
                    existed = final.exists()
                    os.replace(tmp, final)
                    if not existed:
                        created.append(final)
                    continue
                try:
                    os.link(tmp, final)  # fails if the name exists: exclusive creation
                except FileExistsError:
                    raise StackMFFError(
                        f"output {final} appeared while this run was working (another run?); "
                        "pass --overwrite to replace it or choose another name"
                    ) from None
                except OSError:  # a file system without hard links: claim the name, then rename onto it
                    fd = os.open(final, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                    os.close(fd)
                    created.append(final)
                    os.replace(tmp, final)
                    continue
                created.append(final)
                tmp.unlink()
        except BaseException:
            for f in created:
                try:
                    f.unlink(missing_ok=True)
                except OSError:
                    pass
            self.discard()
            raise
        done = [final for _, final in self._staged]
        self._staged.clear()
        return done


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
