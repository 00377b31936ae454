"""Focal stacks in memory: loading a folder, files or a multi-page TIFF into a :class:`Stack` (float32 or compact)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .. import _memory
from ..errors import StackMFFError
from .decode import IMAGE_EXTENSIONS, _normalise_types, from_uint, read_image_file

__all__ = ["CompactLayer", "CompactStack", "Stack", "collect_files", "load_stack", "natural_key"]

log = logging.getLogger("stackmff")


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
        return np.divide(self.pixels[idx], self._scale, dtype=np.float32)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:, :, :]
        return out if dtype is None else out.astype(dtype, copy=False)

    def transpose(self, *axes) -> np.ndarray:
        return np.asarray(self).transpose(*axes)

    @property
    def nbytes(self) -> int:
        return int(self._raw.nbytes)

    @property
    def pixels(self) -> np.ndarray:
        """The stored pixels ``(C, H, W)`` as decoded, unconverted (a view; a gray layer broadcast to C channels)."""
        return self._raw if self._raw.shape[0] == self.shape[0] else np.broadcast_to(self._raw, self.shape)

    @property
    def integer_format(self) -> tuple[np.dtype, float] | None:
        """``(dtype, scale)`` of the stored pixels when they are 8/16-bit integers (``uint8`` / 255, ``uint16`` /
        65535), else None (float or 0/1 data)."""
        if (self._raw.dtype, float(self._scale)) in ((np.uint8, 255.0), (np.uint16, 65535.0)):
            return self._raw.dtype, float(self._scale)
        return None


class CompactStack:
    """A focal stack kept as its decoded 8/16-bit pixels (1/4 or 1/2 of float32), converted per layer and region.

    It presents the ``(N, C, H, W)`` float32 interface that :func:`stackmff.fusion.learned.fuse_stack_v3` and
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


def _check_memory(nbytes: int, what: str) -> None:
    """Refuse, with a one-line error, an allocation that cannot fit in the memory available now."""
    avail = _memory.available_bytes()
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
