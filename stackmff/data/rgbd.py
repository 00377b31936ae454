"""RGB-D scenes: the :class:`RGBDScene` type, and readers for real RGB-D samples (Middlebury, Open3D's frames).

An :class:`RGBDScene` is what stack synthesis starts from: an all-in-focus image and its disparity. The procedural
generator (:mod:`stackmff.data.procedural`) and the photo scenes (:mod:`stackmff.data.photos`) make them with exact
disparity; :func:`load_rgbd_samples` reads measured ones (Middlebury 2005/2006 disparity maps; the NYU, SUN RGB-D,
TUM and ICL-NUIM frames that Open3D shipped), inverts metric depth, normalises the disparity per scene and fills the
sensor's holes.

Images go through the project's reader (:func:`stackmff.io.load_image`); depth files through
:func:`stackmff.io.read_image_file`, whose integers are the stored values (a depth file is data, not intensities),
except the raw Kinect PGM of NYU, parsed here because its raw counts must not be rescaled to the file's ``maxval``.

Shapes: ``image`` is ``(3, H, W)`` float32 RGB in [0, 1]; ``disparity`` is ``(H, W)`` float32 in [0, 1], larger =
nearer (disparity ~ 1 / depth).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import StackMFFError
from ..io import load_rgb, read_image_file

__all__ = ["RGBDScene", "load_rgbd_samples"]


@dataclass
class RGBDScene:
    """An all-in-focus image with its disparity.

    Attributes:
        image: ``(3, H, W)`` float32 RGB in [0, 1], all in focus.
        disparity: ``(H, W)`` float32 in [0, 1], larger = nearer.
        valid: ``(H, W)`` bool, where the disparity was measured (all true for procedural scenes; holes of real
            sensors were filled from the nearest valid pixel and are false here).
        name: a label for logs and file names.
    """

    image: np.ndarray
    disparity: np.ndarray
    valid: np.ndarray | None = None
    name: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.valid is None:
            self.valid = np.ones(self.disparity.shape, dtype=bool)


def _fill_nearest(disp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill invalid pixels with the value of the nearest valid pixel (exact Euclidean nearest)."""
    if valid.all():
        return disp
    from scipy import ndimage

    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    return disp[iy, ix]


def _normalise_disparity(disp: np.ndarray, valid: np.ndarray) -> np.ndarray:
    vals = disp[valid]
    lo, hi = float(vals.min()), float(vals.max())
    out = (disp - lo) / max(hi - lo, 1e-12)
    return np.clip(_fill_nearest(out, valid), 0.0, 1.0).astype(np.float32)


def _read_depth(path: Path) -> np.ndarray:
    """The stored integers of a depth or disparity file ``(H, W)`` (uint8/uint16; the first channel of a colour
    file, e.g. Middlebury's grey-as-RGB PNG)."""
    arr = read_image_file(path)[0][0]
    return arr[..., 0] if arr.ndim == 3 else arr


def _read_pgm_raw(path: Path) -> np.ndarray:
    """Read a binary PGM's raw values as the format defines them (big-endian when 16-bit).

    Not :func:`_read_depth`: Pillow rescales a PGM whose ``maxval`` is not 255 or 65535 to the full range, and a raw
    Kinect frame may declare its 11-bit range. Other PGM flavours (ASCII ``P2``) go through :func:`_read_depth`.
    """
    data = path.read_bytes()
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:  # magic, width, height, maxval; '#' starts a comment
        while data[pos : pos + 1].isspace():
            pos += 1
        if data[pos : pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end : end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    w, h, maxval = int(fields[1]), int(fields[2]), int(fields[3])
    if fields[0] != b"P5":
        return _read_depth(path)
    if maxval < 256:
        return np.frombuffer(data, dtype=np.uint8, count=w * h, offset=pos + 1).reshape(h, w).copy()
    return np.frombuffer(data, dtype=">u2", count=w * h, offset=pos + 1).reshape(h, w).astype(np.uint16)


def _middlebury(scene_dir: Path) -> RGBDScene:
    image = load_rgb(scene_dir / "image.png")
    raw = _read_depth(scene_dir / "disparity_gt.png").astype(np.float32)
    valid = raw > 0  # 0 = unknown / occluded
    return RGBDScene(
        image, _normalise_disparity(raw, valid), valid, f"middlebury/{scene_dir.name}", {"source": "middlebury"}
    )


def _open3d(scene_dir: Path, include_unregistered: bool) -> RGBDScene | None:
    name = scene_dir.name
    if name == "nyu":
        if not include_unregistered:
            return None
        image = load_rgb(scene_dir / "image.ppm")
        raw = _read_pgm_raw(scene_dir / "depth_raw.pgm")
        if np.median(raw) > 2047:  # Kinect raw values are 11-bit; this file was written little-endian
            raw = raw.byteswap()
        raw = raw.astype(np.float64)
        # NYU toolbox: depth[m] = 351.3 / (1092.5 - raw); raw >= 1092.5 (and 2047) means no return
        valid = (raw > 0) & (raw < 1090)
        depth = np.where(valid, 351.3 / np.maximum(1092.5 - raw, 1e-3), 0.0)
    elif name == "sun":
        image = load_rgb(scene_dir / "image.jpg")
        raw = _read_depth(scene_dir / "depth.png").astype(np.uint16)
        # SUN RGB-D stores millimetres circularly shifted by 3 bits
        depth = ((raw >> 3) | (raw << 13)).astype(np.float64) / 1000.0
        valid = (raw > 0) & (depth < 20.0)
    elif name == "tum":
        image = load_rgb(scene_dir / "image.png")
        raw = _read_depth(scene_dir / "depth.png").astype(np.float64)
        depth, valid = raw / 5000.0, raw > 0
    else:
        img_path = next((p for p in (scene_dir / "image.jpg", scene_dir / "image.png") if p.exists()), None)
        if img_path is None or not (scene_dir / "depth.png").exists():
            return None
        image = load_rgb(img_path)
        raw = _read_depth(scene_dir / "depth.png").astype(np.float64)
        depth, valid = raw / 1000.0, raw > 0
    if not valid.any():
        return None
    disp = np.where(valid, 1.0 / np.maximum(depth, 1e-3), 0.0)
    if disp.shape != image.shape[1:]:
        disp = cv2.resize(disp, image.shape[:0:-1], interpolation=cv2.INTER_NEAREST)
        valid = cv2.resize(valid.astype(np.uint8), image.shape[:0:-1], interpolation=cv2.INTER_NEAREST).astype(bool)
    return RGBDScene(image, _normalise_disparity(disp, valid), valid, f"open3d/{name}", {"source": "open3d"})


def load_rgbd_samples(root: str | os.PathLike, *, include_unregistered: bool = False) -> list[RGBDScene]:
    """Read the real RGB-D samples (Middlebury, Open3D's TUM/SUN/ICL frames) as :class:`RGBDScene` objects.

    ``root`` may be the shared data folder (holding ``middlebury_rgbd/`` and/or ``rgbd_samples_open3d/``) or one of
    those two folders. Disparities are normalised per scene to [0, 1] over the valid pixels (larger = nearer; metric
    depth is inverted first); unknown pixels are filled with the nearest valid value and marked in ``valid``.

    Args:
        root: folder to read.
        include_unregistered: also return the NYU raw Kinect frame, whose depth is NOT registered to the colour image
            (its depth edges do not line up with image edges).

    Returns:
        The scenes, sorted by name. Missing folders give an empty list.
    """
    root = Path(root)
    if not root.is_dir():
        raise StackMFFError(f"RGB-D sample folder not found: {root}; pass the folder holding middlebury_rgbd/")
    candidates = []
    for sub, kind in (("middlebury_rgbd", "middlebury"), ("rgbd_samples_open3d", "open3d")):
        if (root / sub).is_dir():
            candidates.append((root / sub, kind))
    if not candidates:
        if any((d / "disparity_gt.png").exists() for d in root.iterdir() if d.is_dir()):
            candidates.append((root, "middlebury"))
        else:
            candidates.append((root, "open3d"))
    scenes: list[RGBDScene] = []
    for folder, kind in candidates:
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            if kind == "middlebury":
                if (d / "image.png").exists() and (d / "disparity_gt.png").exists():
                    scenes.append(_middlebury(d))
            else:
                s = _open3d(d, include_unregistered)
                if s is not None:
                    scenes.append(s)
    return scenes
