"""Reading and writing focal stacks and single images.

Shape and dtype vocabulary used everywhere in the project:

- a stack is ``(N, C, H, W)`` float32 in [0, 1] (N focal slices, C = 1 or 3, RGB order, channels first);
- a batch of stacks is ``(B, N, C, H, W)``;
- a single image is ``(C, H, W)``; an index map (source layer per pixel) is ``(H, W)`` integer.

Conversion from the integer pixel types of files (uint8, uint16) happens only in this package. Values are scaled by
``1 / (2**bits - 1)`` so that an exact source value survives the round trip ``load -> gather -> save`` bit for bit
(float32 represents every 16-bit integer exactly).

Modules: :mod:`~stackmff.io.decode` (image files to arrays, pixel types), :mod:`~stackmff.io.stack` (loading a focal
stack), :mod:`~stackmff.io.write` (encoding, atomic and all-or-nothing writes of any output file). Benchmark trees of
stacks and pairs are the application layer's: :mod:`stackmff.benchmark`.
"""

from .decode import IMAGE_EXTENSIONS, from_uint, load_image, load_rgb, read_image_file, read_rgb8, to_uint
from .stack import CompactLayer, CompactStack, Stack, collect_files, load_stack, natural_key
from .write import (
    TEMP_SUFFIX,
    OutputSet,
    atomic_folder,
    atomic_write,
    check_output_path,
    check_writable_folder,
    save_image,
    sweep_stale_temps,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "TEMP_SUFFIX",
    "CompactLayer",
    "CompactStack",
    "OutputSet",
    "Stack",
    "atomic_folder",
    "atomic_write",
    "check_output_path",
    "check_writable_folder",
    "collect_files",
    "from_uint",
    "load_image",
    "load_rgb",
    "load_stack",
    "natural_key",
    "read_image_file",
    "read_rgb8",
    "save_image",
    "sweep_stale_temps",
    "to_uint",
]
