"""Decoding image files into integer arrays, and the conversion between pixel types and float32 in [0, 1].

Conversion from the integer pixel types of files (uint8, uint16) happens only here. Values are scaled by
``1 / (2**bits - 1)`` so that an exact source value survives the round trip ``load -> gather -> save`` bit for bit
(float32 represents every 16-bit integer exactly).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import tifffile
from PIL import Image, ImageOps, UnidentifiedImageError

from .. import _memory
from ..errors import StackMFFError

__all__ = ["IMAGE_EXTENSIONS", "from_uint", "load_image", "load_rgb", "read_image_file", "read_rgb8", "to_uint"]

log = logging.getLogger("stackmff")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})

# Pillow refuses images above ~179 MP by default ("decompression bomb"); focus stacks from modern cameras and
# stitched microscopy can legitimately exceed that, so the limit is raised to 1 gigapixel.
Image.MAX_IMAGE_PIXELS = 1_000_000_000


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
    image = np.asarray(image)
    if image.ndim < 2 or image.shape[0] < 2:
        return np.rint(np.clip(image, 0.0, 1.0) * scale).astype(dtype)
    # a few MB of rows at a time: the float temporaries of clip, scale and rint would otherwise be 3 copies of the
    # whole image (the peak of saving a 40 MP result); the same values, element by element
    out = np.empty(image.shape, dtype)
    step = max(1, (1 << 22) // max(1, image[0].size))
    for r0 in range(0, image.shape[0], step):
        out[r0 : r0 + step] = np.rint(np.clip(image[r0 : r0 + step], 0.0, 1.0) * scale)
    return out


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
    avail = _memory.available_bytes()
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


def load_image(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Load one image as ``(C, H, W)`` float32 in [0, 1] and its bit depth; a multi-page TIFF gives its first page."""
    arrays, had_alpha = read_image_file(path)
    if had_alpha:
        log.warning("%s: alpha channel dropped", path)
    img, bits = from_uint(_normalise_types(arrays[:1], [Path(path).name])[0])
    return (img[None] if img.ndim == 2 else img.transpose(2, 0, 1)).copy(), bits


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Load one image as ``(3, H, W)`` float32 in [0, 1] (:func:`load_image`; a grey image repeated to RGB)."""
    img, _ = load_image(path)
    return np.repeat(img, 3, axis=0) if img.shape[0] == 1 else img


def read_rgb8(path: str | os.PathLike) -> np.ndarray:
    """Decode one image as ``(H, W, 3)`` uint8 RGB: the first page, alpha dropped, grey repeated, 16 bits reduced to
    8 by dropping the low byte — the pixels OpenCV's ``imread(path, IMREAD_COLOR)`` gives (in RGB order), with this
    package's checks (decompression bombs, truncated files: one-line :class:`StackMFFError`).

    Examples:
        >>> import tempfile, pathlib, cv2
        >>> path = str(pathlib.Path(tempfile.mkdtemp()) / "g16.png")
        >>> _ = cv2.imwrite(path, np.full((2, 3), 0x1234, np.uint16))
        >>> read_rgb8(path)[0, 0].tolist()
        [18, 18, 18]
    """
    arr = read_image_file(path)[0][0]
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        raise StackMFFError(f"{path}: {arr.dtype} pixels; expected an 8- or 16-bit image")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])
