"""Registration of focal-stack layers: undo focus breathing, hand shake and exposure drift before fusion.

Real stacks are not registered: refocusing changes magnification ("focus breathing", often 1-5 % across a
stack) and hand-held or rail shots shift and rotate. Every fusion method turns such misregistration into ghosts.
:func:`align_stack` estimates, for every layer, a transform to a reference layer, warps the layers into the
reference frame (each layer resampled once) and matches their brightness.

How (one class of decision per step, as in focus-stack's ``task_align``):

- Content analysis on a small copy (the "check level", <= 320 px): every layer's focus profile (Laplacian energy of
  48 px patches). Invalid frames are found first: over/under-exposed, blank or unrelated (low-pass luma far from the
  stack's median) and much noisier (the measures and thresholds of V3's outlier rejection), and blurred everywhere
  (never near the sharpest layer on any textured patch). They are never the reference, never the brightness target,
  never shrink the crop, and no other layer is chained through them; they are reported (warning, ``invalid``).
- The link tree, from content only: a minimum spanning tree over the valid layers' focus-profile distances (neighbours
  in focus are the most alike, so their registration is the most precise); the reference is the tree's centre (the
  middle of the focus range: least resampling, shortest chains). Invalid layers hang as leaves off their most
  similar valid layer. Any permutation of the files gives the same transforms.
- Per link, patch displacements by phase correlation and a robust similarity fit give the transform AND its
  uncertainty (parameter covariance from the patches' spread). ``auto`` leaves the stack untouched (the input array
  itself, bit-exact) unless some valid layer's chained corner displacement exceeds 5 of its standard errors and
  ``skip_tolerance`` px; the same fits choose the motion model (similarity, affine, homography) by an F test.
- Each link is then refined by OpenCV's ECC (``cv2.findTransformECC``) coarse-to-fine on a Gaussian pyramid of luma,
  from the patch estimate: ECC maximises a zero-mean normalised correlation, so it is blind to gain/offset, and a
  symmetric defocus blur does not move image content. (Gradient-magnitude, difference-of-Gaussians and pre-blurred
  inputs were measured too: larger corner errors on synthetic breathing stacks.) Levels smaller than 128 px estimate
  a translation only. When ECC fails or fits badly, ORB features + RANSAC give a second initialisation.
- OpenCV's ECC has no similarity model; ``similarity`` runs the affine model and projects each level's estimate on
  the nearest similarity about the image centre, which keeps it constrained between levels.
- Estimation runs on a copy no larger than ``max_size`` pixels; transforms are rescaled to full resolution.
- Brightness: a per-layer, per-channel exposure gain to the consensus of the valid layers (the median of their mean
  brightness over the common frame, unclipped pixels only; defocus changes local contrast but not means).
  Offsets are kept in the transforms file for hand-edited or imported corrections and applied when present.
- Output frame: ``crop`` keeps the largest axis-aligned rectangle every valid layer covers; ``fill`` keeps the
  reference frame and fills pixels a layer does not cover with the reference layer's pixels.
- A layer whose link does not fit (low correlation after alignment, or an implausible transform) is reported with
  a warning on ``logging.getLogger("stackmff")``; it gets its parent's transform, or is dropped on request. After
  alignment every layer's residual misalignment against its parent is measured again (``residuals``, ``--json``).

Transform convention: ``matrices[i]`` is a 3x3 matrix mapping homogeneous pixel coordinates of the reference layer
to those of layer ``i`` (``x_i = M_i @ x_ref``; pixel centres at integer coordinates, full resolution). The aligned
layer is ``layer_i(M_i @ x)``, i.e. ``cv2.warpPerspective(layer_i, M_i, ..., flags=WARP_INVERSE_MAP)``.

References:
    G. D. Evangelidis, E. Z. Psarakis, "Parametric Image Alignment Using Enhanced Correlation Coefficient
    Maximization", IEEE TPAMI 30(10), 2008.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ._checks import check_choice, check_stack
from .color import luma
from .errors import StackMFFError
from .fusion._common import lowpass_deviation, noise_std

if TYPE_CHECKING:
    from .io import OutputSet

__all__ = [
    "ALIGN_MODES",
    "FRAMES",
    "AlignResult",
    "align_stack",
    "load_transforms",
    "save_transforms",
]

log = logging.getLogger("stackmff")

ALIGN_MODES = ("auto", "none", "translation", "similarity", "affine", "homography")
FRAMES = ("crop", "fill")
TRANSFORMS_FORMAT = "stackmff-transforms"
TRANSFORMS_VERSION = 1

_MOTION = {
    "translation": cv2.MOTION_TRANSLATION,
    "similarity": cv2.MOTION_AFFINE,  # projected on a similarity after every pyramid level
    "affine": cv2.MOTION_AFFINE,
    "homography": cv2.MOTION_HOMOGRAPHY,
}
_COARSEST = 64  # the pyramid stops once a level's longer side would drop below this many pixels
_MODEL_SIZE = 128  # levels with a smaller longer side estimate a translation only: too few pixels for more
_CHECK_SIZE = 320  # longer side of the copy on which `auto` decides whether a stack is already registered
_U16 = 65535.0  # scale of the 16-bit layers a compact input is aligned into
_PATCH = 48  # side of the check-level patches whose phase correlation measures displacement fields and focus
_MODEL_F = 10.0  # F statistic above which a richer motion model is worth its parameters (see _pick_model)
_SKIP_Z = 5.0
_CONFIRM_RATIO = 0.6  # ... and only when its warp leaves less than this share of the pair's decorrelation  # a corner displacement counts only above this many of its standard errors (see _registered_check)
# invalid frames: the thresholds of V3's outlier rejection (stackmff.models.inference.photometric/noise_outliers)
_PHOTOMETRIC_THRESHOLD, _PHOTOMETRIC_RATIO = 0.05, 4.0
_NOISE_THRESHOLD, _NOISE_RATIO = 0.033, 2.5
_BLUR_RATIO = 0.3  # a layer never above this share of the best valid layer's Laplacian energy is blurred everywhere
# Lanczos keeps more of the fine detail fusion selects on than cubic (1-1.5 dB PSNR after fusion on synthetic stacks)
_INTERPOLATION = cv2.INTER_LANCZOS4


@dataclass
class AlignResult:
    """Aligned layers and the transforms that produced them.

    Attributes:
        images: ``(N', C, H', W')`` float32 in [0, 1], the aligned layers (``N' < N`` when failed layers were
            dropped; ``H' x W'`` is the crop in ``crop`` frame). When ``skipped`` it is the input array itself.
            A compact input (:class:`stackmff.io.CompactStack`) gives a compact stack of 16-bit layers (same
            interface, half the memory of float32).
        mode: the motion model used (``none`` when nothing was estimated).
        reference: index (in the input) of the reference layer.
        matrices: ``(N, 3, 3)`` float64, reference -> layer pixel coordinates at input resolution.
        gains: ``(N, C)`` per-layer, per-channel brightness gain applied (1 for untouched layers).
        offsets: ``(N, C)`` per-layer, per-channel brightness offset applied.
        scores: ``(N,)`` ECC correlation of each layer's link to its neighbour (1 for the reference, NaN if unknown).
        failed: input indices of layers whose alignment failed.
        kept: input indices of the layers in ``images``, in order.
        skipped: True when the stack was found registered (or mode ``none``) and returned unchanged.
        invalid: distrusted input layers and why (exposure/blank/unrelated, much noisier, blurred everywhere):
            never the reference, never the brightness target, not in the crop; they follow their nearest valid layer.
        shifts: ``(N,)`` per layer, the largest corner displacement to the reference the check measured (input px).
        noise: ``(N,)`` its standard error, from the spread of the patch displacements (input px).
        residuals: ``(N,)`` registration error left after alignment against the layer's parent (input px).
        parents: the layer each layer was registered to (the link tree, chosen from content).
        frame: ``crop`` or ``fill``.
        crop: ``(x0, y0, width, height)`` of the output in the reference frame.
        size: ``(height, width)`` of the input layers.
        seconds: wall time of the call.
    """

    images: np.ndarray
    mode: str
    reference: int
    matrices: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    scores: np.ndarray
    failed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    skipped: bool = False
    frame: str = "crop"
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    invalid: dict[int, str] = field(default_factory=dict)
    shifts: np.ndarray | None = None
    noise: np.ndarray | None = None
    residuals: np.ndarray | None = None
    parents: dict[int, int] = field(default_factory=dict)

    @property
    def dropped(self) -> list[int]:
        """Input indices of layers left out of ``images``."""
        keep = set(self.kept)
        return [i for i in range(len(self.matrices)) if i not in keep]

    def layer_summaries(self) -> list[dict]:
        """Per-layer transform parameters (similarity part: scale, rotation, shift) and fit, JSON-able."""
        out = []
        for i, m in enumerate(self.matrices):
            a = m[:2, :2] / m[2, 2]
            scale = math.sqrt(abs(float(np.linalg.det(a))))
            rot = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
            out.append(
                {
                    "index": i,
                    "scale": round(scale, 6),
                    "rotation_deg": round(rot, 4),
                    "tx": round(float(m[0, 2] / m[2, 2]), 3),
                    "ty": round(float(m[1, 2] / m[2, 2]), 3),
                    "score": None if not np.isfinite(self.scores[i]) else round(float(self.scores[i]), 4),
                    "gain": [round(float(g), 4) for g in self.gains[i]],
                    "offset": [round(float(o), 4) for o in self.offsets[i]],
                    "failed": i in self.failed,
                    "distrusted": self.invalid.get(i),
                    "linked_to": self.parents.get(i),
                    "shift_px": _rounded(self.shifts, i),
                    "shift_noise_px": _rounded(self.noise, i),
                    "residual_px": _rounded(self.residuals, i),
                }
            )
        return out

    def summary(self) -> dict:
        """A JSON-able report: mode, reference, skipped, frame/crop, failed and dropped layers, per-layer transforms."""
        return {
            "mode": self.mode,
            "reference": self.reference,
            "skipped": self.skipped,
            "frame": self.frame,
            "crop": list(self.crop),
            "input_size": list(self.size),
            "output_size": [int(self.images.shape[2]), int(self.images.shape[3])],
            "failed": list(self.failed),
            "dropped": self.dropped,
            "distrusted": {str(k): v for k, v in sorted(self.invalid.items())},
            "max_residual_px": None
            if self.residuals is None or not np.isfinite(self.residuals).any()
            else round(float(np.nanmax(self.residuals)), 3),
            "max_shift_px": round(_max_corner_shift(self.matrices, self.size), 3),
            "seconds": round(self.seconds, 4),
            "layers": self.layer_summaries(),
        }

    def to_dict(self) -> dict:
        """The transforms-file content (see :func:`save_transforms`)."""
        return {
            "format": TRANSFORMS_FORMAT,
            "version": TRANSFORMS_VERSION,
            "mode": self.mode,
            "reference": self.reference,
            "n_layers": len(self.matrices),
            "height": self.size[0],
            "width": self.size[1],
            "skipped": self.skipped,
            "failed": list(self.failed),
            "layers": [
                {
                    "index": i,
                    "matrix": [[float(v) for v in row] for row in self.matrices[i]],
                    "gain": [float(g) for g in self.gains[i]],
                    "offset": [float(o) for o in self.offsets[i]],
                    "score": None if not np.isfinite(self.scores[i]) else float(self.scores[i]),
                }
                for i in range(len(self.matrices))
            ],
        }


def _rounded(values: np.ndarray | None, i: int) -> float | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return round(float(values[i]), 3)


# ----------------------------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------------------------


def align_stack(
    images: np.ndarray,
    *,
    mode: str = "auto",
    reference: int | None = None,
    frame: str = "crop",
    transforms: str | os.PathLike | dict | AlignResult | None = None,
    save_transforms: str | os.PathLike | None = None,
    drop_failed: bool = False,
    match_brightness: bool = True,
    max_size: int = 1024,
    skip_tolerance: float = 0.3,
    min_score: float = 0.5,
    max_scale_change: float = 0.2,
    max_rotation_deg: float = 10.0,
    max_shift: float = 0.25,
) -> AlignResult:
    """Register the layers of a focal stack to a reference layer.

    Args:
        images: stack ``(N, C, H, W)`` float32 in [0, 1], C = 1 or 3.
        mode: motion model: ``auto`` (similarity, skipped when already registered), ``none``, ``translation``,
            ``similarity`` (scale + rotation + shift: focus breathing and hand-held shake), ``affine``,
            ``homography``.
        reference: index of the reference layer; default chosen from content: the centre of a tree that links
            every valid layer to its nearest neighbour in focus (so the file order does not matter).
        frame: ``crop`` (the largest rectangle all layers cover) or ``fill`` (reference frame; uncovered pixels
            taken from the reference layer).
        transforms: transforms to apply instead of estimating them: a path to a transforms file, its dict, or an
            earlier :class:`AlignResult` (e.g. of another stack of the same sequence). A file made at another
            resolution is rescaled.
        save_transforms: write the transforms used to this JSON file (atomic; see :func:`save_transforms`).
        drop_failed: leave layers whose alignment failed out of the output instead of keeping them with their
            neighbour's transform.
        match_brightness: fit a per-channel exposure gain of every valid layer to the consensus (per-pixel median
            of the valid layers, low-passed); distrusted layers are left as they are.
        max_size: estimate on a copy whose longer side is at most this many pixels (transforms are rescaled).
        skip_tolerance: ``auto`` leaves the stack untouched unless some valid layer's corner moves by more than
            5 standard errors of its own estimate (measured on the stack) AND by more than this many pixels.
        min_score: a link whose ECC correlation (luma, after alignment) is below this has failed.
        max_scale_change: a link with ``|scale - 1|`` above this is implausible (failed).
        max_rotation_deg: a link rotating more than this is implausible (failed).
        max_shift: a link moving a corner by more than this fraction of the image diagonal is implausible.

    Returns:
        AlignResult with ``images`` ``(N', C, H', W')`` float32 and the transforms (``summary()`` is JSON-able).

    Raises:
        StackMFFError: bad stack, unknown ``mode``/``frame``, bad ``reference``, an unreadable or mismatched
            transforms file.

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> base = cv2.GaussianBlur(rng.random((96, 128)).astype(np.float32), (0, 0), 2)
        >>> stack = np.stack([base[None], base[None]])  # (2, 1, 96, 128), already registered
        >>> res = align_stack(stack, mode="auto")
        >>> res.skipped, res.images is stack
        (True, True)
    """
    t0 = time.perf_counter()
    check_choice(mode, ALIGN_MODES, "align mode")
    check_choice(frame, FRAMES, "align frame")
    check_stack(images, "stack")
    n, c, h, w = images.shape
    if images.dtype != np.float32:
        images = images.astype(np.float32)
    if reference is not None:
        if not isinstance(reference, (int, np.integer)) or not -n <= int(reference) < n:
            raise StackMFFError(
                f"reference must be a layer index in [0, {n - 1}], got {reference!r}; omit it to choose from content."
            )
        reference = int(reference) % n
    if max_size < 2 * _COARSEST:
        raise StackMFFError(f"max_size must be at least {2 * _COARSEST} pixels, got {max_size}.")

    if transforms is not None:
        est = _transforms_from(transforms, n=n, c=c, size=(h, w))
        reference = est.reference
    elif mode == "none":
        est = _identity(n, c, n // 2 if reference is None else reference, (h, w), mode="none", skipped=True)
    else:
        est = _estimate(
            images,
            mode=mode,
            reference=reference,
            max_size=max_size,
            skip_tolerance=skip_tolerance,
            limits=_Limits(min_score, max_scale_change, max_rotation_deg, max_shift),
        )

    if est.skipped:
        result = est
        result.crop = (0, 0, w, h)
        result.images = images  # registered: the caller's array itself, untouched
    else:
        result = _apply(images, est, frame=frame, drop_failed=drop_failed, match_brightness=match_brightness)
    result.seconds = time.perf_counter() - t0
    if save_transforms is not None:
        _write_transforms(save_transforms, result)
    return result


def save_transforms(
    path: str | os.PathLike, result: AlignResult, *, overwrite: bool = True, outputs: OutputSet | None = None
) -> Path:
    """Write ``result``'s transforms to a small JSON file, atomically (temp file + rename).

    The file holds, per layer, the 3x3 reference -> layer matrix at the input resolution, the brightness gain and
    offset and the fit score, plus mode, reference index, layer count and size. Load it with
    :func:`load_transforms` or pass it as ``align_stack(..., transforms=path)``. ``overwrite=False`` refuses an
    existing file; with ``outputs`` the file is staged in that :class:`~stackmff.io.OutputSet` (written together
    with the command's other outputs).
    """
    return _write_transforms(path, result, overwrite=overwrite, outputs=outputs)


def _write_transforms(
    path: str | os.PathLike, result: AlignResult, *, overwrite: bool = True, outputs: OutputSet | None = None
) -> Path:
    from .io import OutputSet

    path = Path(path)
    data = (json.dumps(result.to_dict(), indent=1) + "\n").encode()
    if outputs is not None:
        outputs.write_bytes(path, data)
        return path
    with OutputSet(overwrite=overwrite) as outs:
        outs.write_bytes(path, data)
    return path


def load_transforms(path: str | os.PathLike) -> dict:
    """Read and validate a transforms file written by :func:`save_transforms`.

    Raises:
        StackMFFError: missing, unreadable or malformed file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackMFFError(
            f"transforms file {path} does not exist; check the path or save one with --save-transforms"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StackMFFError(
            f"transforms file {path} is not valid JSON ({exc.__class__.__name__}); re-create it with --save-transforms"
        ) from None
    _validate_transforms(data, str(path))
    return data


# ----------------------------------------------------------------------------------------------------------------
# Transforms files
# ----------------------------------------------------------------------------------------------------------------


def _validate_transforms(data: Any, where: str) -> None:
    def bad(what: str) -> StackMFFError:
        return StackMFFError(f"transforms {where} is malformed: {what}; re-create it with --save-transforms")

    if not isinstance(data, dict) or data.get("format") != TRANSFORMS_FORMAT:
        raise bad(f"no 'format': '{TRANSFORMS_FORMAT}' entry")
    if data.get("version") != TRANSFORMS_VERSION:
        raise bad(f"version {data.get('version')!r} is not {TRANSFORMS_VERSION}")
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) < 2 or data.get("n_layers") != len(layers):
        raise bad("'layers' must list every layer and match 'n_layers'")
    for key in ("height", "width", "reference"):
        if not isinstance(data.get(key), int) or data[key] < 0:
            raise bad(f"'{key}' must be a non-negative integer")
    if data["reference"] >= len(layers):
        raise bad(f"reference {data['reference']} is not a layer index")
    if data.get("mode") not in ALIGN_MODES:
        raise bad(f"mode {data.get('mode')!r} is unknown")
    for i, layer in enumerate(layers):
        try:
            m = np.asarray(layer["matrix"], dtype=np.float64)
            g = np.asarray(layer.get("gain", [1.0]), dtype=np.float64)
            o = np.asarray(layer.get("offset", [0.0]), dtype=np.float64)
        except (TypeError, ValueError, KeyError):
            raise bad(f"layer {i} has no numeric 'matrix'") from None
        if m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-9:
            raise bad(f"layer {i} matrix must be an invertible, finite 3x3 matrix")
        if g.ndim != 1 or o.shape != g.shape or not (np.isfinite(g).all() and np.isfinite(o).all()):
            raise bad(f"layer {i} gain/offset must be equal-length lists of numbers")


def _transforms_from(
    src: str | os.PathLike | dict | AlignResult, *, n: int, c: int, size: tuple[int, int]
) -> AlignResult:
    """Turn a transforms file/dict/result into an estimate for a stack of ``n`` layers of ``size``."""
    if isinstance(src, AlignResult):
        data = src.to_dict()
        where = "result"
    elif isinstance(src, dict):
        data, where = src, "dict"
        _validate_transforms(data, where)
    else:
        data, where = load_transforms(src), str(src)
    if data["n_layers"] != n:
        raise StackMFFError(
            f"transforms {where} are for {data['n_layers']} layers but the stack has {n}; "
            "use the transforms of a stack with the same number of layers or estimate new ones"
        )
    layers = data["layers"]
    mats = np.stack([np.asarray(x["matrix"], dtype=np.float64) for x in layers])
    gains = np.ones((n, c))
    offsets = np.zeros((n, c))
    for i, x in enumerate(layers):
        g, o = np.asarray(x.get("gain", [1.0]), float), np.asarray(x.get("offset", [0.0]), float)
        if g.size not in (1, c):
            raise StackMFFError(
                f"transforms {where} have {g.size}-channel gains but the stack has {c} channels; estimate new ones"
            )
        gains[i], offsets[i] = g, o
    h0, w0 = data["height"], data["width"]
    if (h0, w0) != size and h0 > 0 and w0 > 0:
        # same sequence at another resolution: conjugate with the pixel-centre scaling between the two grids
        log.info("rescaling transforms made at %dx%d to %dx%d", w0, h0, size[1], size[0])
        s = _grid_scale((h0, w0), size)
        mats = np.stack([s @ m @ np.linalg.inv(s) for m in mats])
    scores = np.array([np.nan if x.get("score") is None else float(x["score"]) for x in layers])
    return AlignResult(
        images=np.empty((0, c, 0, 0), np.float32),
        mode=data["mode"],
        reference=int(data["reference"]),
        matrices=mats / mats[:, 2:3, 2:3],
        gains=gains,
        offsets=offsets,
        scores=scores,
        failed=[int(i) for i in data.get("failed", [])],
        kept=list(range(n)),
        skipped=bool(data.get("skipped", False)),
        size=size,
    )


def _identity(n: int, c: int, reference: int, size: tuple[int, int], *, mode: str, skipped: bool) -> AlignResult:
    scores = np.full(n, np.nan)
    scores[reference] = 1.0
    return AlignResult(
        images=np.empty((0, c, 0, 0), np.float32),
        mode=mode,
        reference=reference,
        matrices=np.tile(np.eye(3), (n, 1, 1)),
        gains=np.ones((n, c)),
        offsets=np.zeros((n, c)),
        scores=scores,
        kept=list(range(n)),
        skipped=skipped,
        crop=(0, 0, size[1], size[0]),
        size=size,
    )


# ----------------------------------------------------------------------------------------------------------------
# Estimation
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Limits:
    min_score: float
    max_scale_change: float
    max_rotation_deg: float
    max_shift: float


def _grid_scale(src: tuple[int, int], dst: tuple[int, int]) -> np.ndarray:
    """3x3 map from pixel-centre coordinates of an ``src`` (H, W) grid to those of a resized ``dst`` grid."""
    sy, sx = dst[0] / src[0], dst[1] / src[1]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _features(luma: np.ndarray) -> np.ndarray:
    """The signal ECC aligns: luma itself (see the module notes on why not gradients)."""
    return luma


def _pyramid(img: np.ndarray) -> list[np.ndarray]:
    """Gaussian pyramid, finest first; level k has pixel-centre coordinates ``x_k = x_0 / 2**k``."""
    levels = [img]
    while max(levels[-1].shape) // 2 >= _COARSEST and min(levels[-1].shape) // 2 >= 16:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _to_level(m: np.ndarray, k: int) -> np.ndarray:
    """Express a working-resolution matrix at pyramid level ``k`` (pyrDown: ``x_k = x_0 / 2**k``)."""
    s = np.diag([0.5**k, 0.5**k, 1.0])
    return s @ m @ np.linalg.inv(s)


def _from_level(m: np.ndarray, k: int) -> np.ndarray:
    """Inverse of :func:`_to_level`: a level-``k`` matrix at working resolution."""
    s = np.diag([2.0**k, 2.0**k, 1.0])
    return s @ m @ np.linalg.inv(s)


def _project(m: np.ndarray, mode: str, centre: tuple[float, float] | None = None) -> np.ndarray:
    """Nearest matrix of the motion model ``mode`` (similarity: closest scaled rotation of the 2x2 part).

    With ``centre`` (x, y) the projection keeps where that point goes: projecting about the image origin instead
    moved the image centre by the dropped shear times the centre's distance to the corner (1.4 px measured on a
    640x360 phone stack).
    """
    m = m / m[2, 2]
    if mode == "homography":
        return m
    out = np.eye(3)
    out[:2, 2] = m[:2, 2]
    if mode == "affine":
        out[:2, :2] = m[:2, :2]
    elif mode == "similarity":
        p = 0.5 * (m[0, 0] + m[1, 1])
        q = 0.5 * (m[1, 0] - m[0, 1])
        out[:2, :2] = [[p, -q], [q, p]]
    if centre is not None:
        c = np.asarray(centre, np.float64)
        out[:2, 2] += (m[:2, :2] - out[:2, :2]) @ c
    return out


def _ecc_pyramid(
    tmpl: list[np.ndarray],
    inp: list[np.ndarray],
    init: np.ndarray,
    mode: str,
    *,
    start_level: int | None = None,
    stop_level: int = 0,
) -> tuple[np.ndarray, float]:
    """Coarse-to-fine ECC of ``inp`` onto ``tmpl`` (pyramids, finest first) from ``init`` (level-0 matrix).

    Runs levels ``start_level`` (default the coarsest) down to ``stop_level``. Returns the level-0 matrix ``W``
    (template -> input coordinates) and the correlation at ``stop_level`` (NaN when ECC did not converge there).
    """
    m = init.copy()
    cc = float("nan")
    top = len(tmpl) - 1
    start = top if start_level is None else start_level
    for k in range(start, stop_level - 1, -1):
        # small levels: a translation only (from a rough start, more parameters on few pixels wander off)
        level_mode = mode if k == 0 or max(tmpl[k].shape) >= _MODEL_SIZE else "translation"
        motion = _MOTION[level_mode]
        mk = _to_level(m, k)
        warp = (mk if level_mode == "homography" else mk[:2]).astype(np.float32)
        iters = 100 if k == top else 50
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iters, 1e-5)
        try:
            cc, warp = cv2.findTransformECC(tmpl[k], inp[k], warp, motion, criteria, None, 3)
        except cv2.error:
            cc = float("nan")  # did not converge at this level: keep the previous estimate
            continue
        mk_new = np.vstack([warp.astype(np.float64), [0, 0, 1]]) if warp.shape[0] == 2 else warp.astype(np.float64)
        if level_mode == "translation":
            mk[:2, 2] = mk_new[:2, 2]  # the 2x2 part passed in is kept as it is
            m = _from_level(mk, k)
        else:
            m = _from_level(_project(mk_new, mode, ((tmpl[k].shape[1] - 1) / 2, (tmpl[k].shape[0] - 1) / 2)), k)
    return m, float(cc)


def _phase_init(tmpl: np.ndarray, inp: np.ndarray) -> np.ndarray:
    """Translation (template -> input coordinates) by phase correlation, at the level of the given images."""
    win = cv2.createHanningWindow(tmpl.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(tmpl, inp, win)
    m = np.eye(3)
    m[:2, 2] = dx, dy
    return m


def _feature_init(tmpl: np.ndarray, inp: np.ndarray, mode: str) -> np.ndarray | None:
    """ORB + RANSAC estimate (template -> input coordinates) on two luma images; None when it finds too little."""

    def u8(x: np.ndarray) -> np.ndarray:
        lo, hi = np.percentile(x, (0.5, 99.5))
        return np.clip((x - lo) * (255.0 / max(hi - lo, 1e-6)), 0, 255).astype(np.uint8)

    orb = cv2.ORB_create(nfeatures=2000)
    k1, d1 = orb.detectAndCompute(u8(tmpl), None)
    k2, d2 = orb.detectAndCompute(u8(inp), None)
    if d1 is None or d2 is None or len(k1) < 8 or len(k2) < 8:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(d1, d2)
    if len(matches) < 8:
        return None
    p1 = np.float32([k1[mt.queryIdx].pt for mt in matches])
    p2 = np.float32([k2[mt.trainIdx].pt for mt in matches])
    if mode == "homography":
        h, inl = cv2.findHomography(p1, p2, cv2.RANSAC, 3.0)
        if h is None or inl.sum() < 8:
            return None
        return h / h[2, 2]
    est = cv2.estimateAffine2D if mode == "affine" else cv2.estimateAffinePartial2D
    a, inl = est(p1, p2, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    if a is None or inl.sum() < 8:
        return None
    return _project(np.vstack([a, [0, 0, 1]]), mode, ((tmpl.shape[1] - 1) / 2, (tmpl.shape[0] - 1) / 2))


def _link_problem(w: np.ndarray, score: float, size: tuple[int, int], limits: _Limits) -> str | None:
    """Why a neighbour link (template -> input matrix at working resolution) is not plausible, or None."""
    if not np.isfinite(score) or score < limits.min_score:
        return f"low ECC correlation {score:.3f} < {limits.min_score}"
    a = w[:2, :2] / w[2, 2]
    det = float(np.linalg.det(a))
    if det <= 0:
        return "transform flips the image"
    scale = math.sqrt(det)
    if abs(scale - 1) > limits.max_scale_change:
        return f"implausible scale {scale:.3f}"
    rot = abs(math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    if rot > limits.max_rotation_deg:
        return f"implausible rotation {rot:.1f} deg"
    if _max_corner_shift(w[None], size) > limits.max_shift * math.hypot(*size):
        return "implausible shift"
    return None


def _max_corner_shift(mats: np.ndarray, size: tuple[int, int]) -> float:
    """Largest displacement, in pixels, of an image corner under any of ``mats`` ``(K, 3, 3)``."""
    h, w = size
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], dtype=np.float64).T  # (3, 4)
    moved = mats @ corners  # (K, 3, 4)
    moved = moved[:, :2] / moved[:, 2:3]
    return float(np.abs(moved - corners[None, :2]).max()) if len(mats) else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Content analysis on the check level: invalid frames, focus profiles, the link tree, patch displacement fields
# ----------------------------------------------------------------------------------------------------------------


def _patch_energy(img: np.ndarray) -> np.ndarray:
    """``(K,)`` mean squared Laplacian of every grid patch of a check-level luma image (its focus measure)."""
    lap = cv2.Laplacian(img, cv2.CV_32F, ksize=3)
    sq = cv2.boxFilter(lap * lap, -1, (_PATCH, _PATCH), normalize=True, anchor=(0, 0), borderType=cv2.BORDER_REFLECT)
    ys, xs = _patch_grid(img.shape)
    return sq[ys, xs].astype(np.float64) + 1e-12


def _patch_grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners ``(ys, xs)`` of the ``_PATCH``-sized patches, ``_PATCH // 2`` apart, inside ``shape``."""
    h, w = shape
    ys = np.arange(0, max(h - _PATCH, 0) + 1, _PATCH // 2)
    xs = np.arange(0, max(w - _PATCH, 0) + 1, _PATCH // 2)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    return yy.ravel(), xx.ravel()


def _invalid_frames(images: np.ndarray, energy: np.ndarray) -> dict[int, str]:
    """Frames that must not steer the alignment, with the reason: over/under-exposed, blank or unrelated (low-pass
    luma far from the stack's median), much noisier, or blurred everywhere (sharp nowhere the others are).

    The first two use the same measurements and thresholds as V3's outlier rejection
    (:func:`stackmff.models.inference.outlier_layers`). Blurred everywhere: on the textured patches, a valid layer
    is the sharpest (or nearly: its neighbours in focus) somewhere; a layer whose Laplacian energy stays below
    ``_BLUR_RATIO`` of the patch's best valid layer on every patch is not in focus anywhere. Never more than all
    but two layers are marked.
    """
    n = len(images)
    out: dict[int, str] = {}
    if n < 3:
        return out
    dev = lowpass_deviation(images)
    bright = (dev > _PHOTOMETRIC_THRESHOLD) & (dev > _PHOTOMETRIC_RATIO * np.median(dev))
    # the noise estimate on every sixth band of 32 rows: the same measure as V3's on a sixth of the pixels (it would
    # otherwise be half the cost of the registered check); noise is uniform, so the bands suffice
    h = images.shape[2]

    def bands(k: int) -> np.ndarray:
        layer = images[k]
        if h <= 192:
            return np.asarray(layer[:, :, :], np.float32)
        return np.concatenate([np.asarray(layer[:, y : y + 32], np.float32) for y in range(0, h, 192)], axis=1)

    sig = np.array([noise_std(bands(k)) for k in range(n)])
    noisy = (sig > _NOISE_THRESHOLD) & (sig > _NOISE_RATIO * np.median(sig))
    for k in range(n):
        if bright[k]:
            out[k] = "exposure/blank/unrelated"
        elif noisy[k]:
            out[k] = "much noisier"
    rest = [k for k in range(n) if k not in out]
    if len(rest) >= 3:
        best = energy[rest].max(0)  # (K,)
        textured = best > 0.1 * np.median(best)
        if textured.sum() >= 4:
            peak = (energy[:, textured] / best[textured]).max(1)  # (N,)
            for k in rest:
                if peak[k] < _BLUR_RATIO:
                    out[k] = "blurred everywhere"
    if n - len(out) < 2:
        return {}
    return out


def _link_tree(energy: np.ndarray, valid: list[int], reference: int | None) -> tuple[int, dict[int, int]]:
    """Reference layer and each other layer's parent, from content only (independent of the file order).

    Layers are compared by their focus profiles (log Laplacian energy per patch): neighbours in focus are the most
    alike, so their registration is the most precise. The valid layers are joined by a minimum spanning tree of
    that distance; the reference is its centre (smallest largest path to any valid layer), so chains are short and
    the reference sits in the middle of the focus range (the magnification that needs the least resampling). An
    invalid layer hangs as a leaf off its most similar valid layer, so no other layer is chained through it.
    """
    n = len(energy)
    logs = np.log(energy)
    dist = np.abs(logs[:, None, :] - logs[None, :, :]).mean(-1)  # (N, N)
    parent: dict[int, int] = {}
    # Prim's algorithm over the valid layers (ties broken by content distance, then index)
    in_tree = [valid[0]]
    edges: dict[int, list[tuple[int, float]]] = {k: [] for k in range(n)}
    while len(in_tree) < len(valid):
        best = None
        for a in in_tree:
            for b in valid:
                if b not in in_tree and (best is None or dist[a, b] < best[2]):
                    best = (a, b, dist[a, b])
        a, b, d = best
        in_tree.append(b)
        edges[a].append((b, d))
        edges[b].append((a, d))

    def farthest(src: int) -> float:
        seen, stack, far = {src}, [(src, 0.0)], 0.0
        while stack:
            u, du = stack.pop()
            far = max(far, du)
            for v, d in edges[u]:
                if v not in seen:
                    seen.add(v)
                    stack.append((v, du + d))
        return far

    if reference is None or reference not in valid:
        ecc = {k: farthest(k) for k in valid}
        root = min(valid, key=lambda k: (round(ecc[k], 9), float(dist[k, valid].sum()), k))
        if reference is not None:
            root = reference  # an invalid layer the user asked for: hang the tree off it anyway
    else:
        root = reference
    order = [root] if root in valid else []
    seen = set(order)
    if root not in valid:  # user-chosen invalid reference: its nearest valid layer links to it
        near = min(valid, key=lambda k: (dist[root, k], k))
        parent[near] = root
        order, seen = [near], {near, root}
    q = list(order)
    while q:
        u = q.pop(0)
        for v, _ in sorted(edges[u], key=lambda e: (e[1], e[0])):
            if v not in seen:
                seen.add(v)
                parent[v] = u
                q.append(v)
    for k in range(n):
        if k not in seen:
            parent[k] = min(valid, key=lambda j: (dist[k, j], j))
    return root, parent


def _bfs(parent: dict[int, int], root: int) -> list[tuple[int, int]]:
    """(layer, parent) pairs ordered so every parent comes before its children."""
    children: dict[int, list[int]] = {}
    for c, p in parent.items():
        children.setdefault(p, []).append(c)
    out, q = [], [root]
    while q:
        u = q.pop(0)
        for c in sorted(children.get(u, [])):
            out.append((c, u))
            q.append(c)
    return out


@dataclass
class _Field:
    """A similarity fitted to patch displacements of one link (check level): matrix, parameter covariance."""

    matrix: np.ndarray  # 3x3 template -> input, check-level pixels
    params: np.ndarray  # (4,) a, b, tx, ty of d(x) = [[a, -b], [b, a]] (x - c) / r + t  (displacement field)
    cov: np.ndarray  # (4, 4)
    rms: dict[str, float]  # residual RMS (px) of each motion model fitted to the same inlier patches
    inliers: int
    median_shift: float  # median displacement magnitude over the inlier patches (px)


def _patch_field(tmpl: np.ndarray, inp: np.ndarray) -> _Field | None:
    """Displacements of ``inp`` against ``tmpl`` on a grid of patches (phase correlation), and a robust similarity
    fit with its parameter covariance: the estimate's own uncertainty, measured on this stack's content.

    A global phase correlation first brings the patches near each other (hand shake of many pixels); defocused
    patches correlate weakly and wander, so they are left out by their response and by an iterated 3-MAD rule on the
    fit residual. None when fewer than 6 patches survive (textureless or unrelated content).
    """
    h, w = tmpl.shape
    win = cv2.createHanningWindow((w, h), cv2.CV_32F)
    (gx, gy), _ = cv2.phaseCorrelate(tmpl, inp, win)
    ox, oy = round(gx), round(gy)
    pwin = cv2.createHanningWindow((_PATCH, _PATCH), cv2.CV_32F)
    ys, xs = _patch_grid((h, w))
    pts, dis, resp = [], [], []
    for y, x in zip(ys, xs):
        y2, x2 = y + oy, x + ox
        if y2 < 0 or x2 < 0 or y2 + _PATCH > h or x2 + _PATCH > w:
            continue
        a = tmpl[y : y + _PATCH, x : x + _PATCH]
        b = inp[y2 : y2 + _PATCH, x2 : x2 + _PATCH]
        if cv2.meanStdDev(a)[1][0, 0] < 1e-4 or cv2.meanStdDev(b)[1][0, 0] < 1e-4:
            continue
        (dx, dy), r = cv2.phaseCorrelate(a, b, pwin)
        pts.append((x + (_PATCH - 1) / 2, y + (_PATCH - 1) / 2))
        dis.append((dx + ox, dy + oy))
        resp.append(r)
    if len(pts) < 6:
        return None
    pts, dis, resp = np.array(pts), np.array(dis), np.array(resp)
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    radius = math.hypot(w, h) / 2
    q = (pts - centre) / radius
    keep = resp > 0.05
    a_sim = _design(q, "similarity")
    target = dis.reshape(-1)
    for _ in range(4):
        if keep.sum() < 6:
            return None
        rows = np.repeat(keep, 2)
        p, *_ = np.linalg.lstsq(a_sim[rows], target[rows], rcond=None)
        r = np.linalg.norm((a_sim @ p - target).reshape(-1, 2), axis=1)
        mad = 1.4826 * np.median(r[keep])
        new = (resp > 0.05) & (r <= max(3 * mad, 0.05))
        if (new == keep).all():
            break
        keep = new
    if keep.sum() < 6:
        return None
    rows = np.repeat(keep, 2)
    p, *_ = np.linalg.lstsq(a_sim[rows], target[rows], rcond=None)
    res = a_sim[rows] @ p - target[rows]
    dof = max(int(rows.sum()) - 4, 1)
    sigma2 = float(res @ res) / dof
    cov = sigma2 * np.linalg.inv(a_sim[rows].T @ a_sim[rows])
    rms = {"similarity": math.sqrt(float(res @ res) / keep.sum())}
    for model in ("affine", "homography"):
        src, dst = pts[keep], pts[keep] + dis[keep]
        if model == "affine":
            a_aff = _design(q[keep], "affine")
            pa, *_ = np.linalg.lstsq(a_aff, target[rows], rcond=None)
            ra = a_aff @ pa - target[rows]
        else:
            hm, _ = cv2.findHomography(src, dst, 0)
            if hm is None:
                rms[model] = rms["affine"]
                continue
            pr = cv2.perspectiveTransform(src[None].astype(np.float64), hm)[0]
            ra = (pr - dst).ravel()
        rms[model] = math.sqrt(float(ra @ ra) / keep.sum())
    # the similarity as a matrix: x' = x + d(x), d(x) = S (x - c) / r + t
    a_, b_, tx, ty = p
    lin = np.array([[a_, -b_], [b_, a_]]) / radius
    m = np.eye(3)
    m[:2, :2] += lin
    m[:2, 2] = np.array([tx, ty]) - lin @ centre
    med = float(np.median(np.linalg.norm(dis[keep], axis=1)))
    return _Field(matrix=m, params=p, cov=cov, rms=rms, inliers=int(keep.sum()), median_shift=med)


def _design(q: np.ndarray, model: str) -> np.ndarray:
    """Rows (x then y displacement per point) of the linear displacement model at normalised points ``q (K, 2)``."""
    k = len(q)
    x, y = q[:, 0], q[:, 1]
    one, zero = np.ones(k), np.zeros(k)
    if model == "similarity":
        rx = np.stack([x, -y, one, zero], 1)
        ry = np.stack([y, x, zero, one], 1)
    else:
        rx = np.stack([x, y, one, zero, zero, zero], 1)
        ry = np.stack([zero, zero, zero, x, y, one], 1)
    return np.stack([rx, ry], 1).reshape(2 * k, -1)


def _corner_jacobian(shape: tuple[int, int]) -> np.ndarray:
    """``(8, 4)``: the similarity displacement parameters -> x/y displacements of the four image corners."""
    h, w = shape
    radius = math.hypot(w, h) / 2
    c = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], float) - [(w - 1) / 2, (h - 1) / 2]
    return _design(c / radius, "similarity")


def _confirmed(tmpl: np.ndarray, inp: np.ndarray, f: _Field) -> bool:
    """Does warping ``inp`` by the link's estimate really bring it onto ``tmpl``? Defocus differences bias patch
    displacements near depth edges (blur spreads over one side only) consistently enough to look significant; a
    real misregistration, unlike such a bias, leaves much less decorrelation (1 - ECC) after the warp. Measured on
    GT stacks: real shifts of 2.5-6 px: ratio 0.02-0.22; registered stacks (biased estimates of 0.04-0.6 px): 0.9-1.7.
    """
    h, w = tmpl.shape
    warped = cv2.warpPerspective(
        inp, f.matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )
    b = max(2, min(h, w) // 32)
    mask = np.zeros((h, w), np.uint8)
    mask[b:-b, b:-b] = 1
    try:
        before = 1.0 - cv2.computeECC(tmpl, inp, mask)
        after = 1.0 - cv2.computeECC(tmpl, warped, mask)
    except cv2.error:
        return True  # cannot tell: trust the statistics
    return after < _CONFIRM_RATIO * before


def _registered_check(
    small: list[np.ndarray],
    fields: dict[int, _Field | None],
    parent: dict[int, int],
    root: int,
    valid: list[int],
    shape: tuple[int, int],
    to_full: float,
    floor_px: float,
) -> tuple[bool, np.ndarray, np.ndarray]:
    """Decide from the estimates' own uncertainty whether the valid layers are registered.

    Each layer's displacement from the reference is the sum of its links' displacement parameters along the tree
    (small motions compose additively to first order) and so is its covariance. A layer has moved when a corner
    moves by more than ``_SKIP_Z`` standard errors AND by more than ``floor_px`` at input resolution (a shift that
    small costs less than the resampling that would undo it). Links that could not be measured count as not moved,
    and so do links whose warp does not make the pair agree better (:func:`_confirmed`).

    Returns:
        ``(registered, shift_px (N,), noise_px (N,))``: per layer the largest corner displacement and its standard
        error, at input resolution (NaN for layers not checked).
    """
    n = len(parent) + 1
    jac = _corner_jacobian(shape)
    shift = np.full(n, np.nan)
    noise = np.full(n, np.nan)
    shift[root] = noise[root] = 0.0
    params = {root: np.zeros(4)}
    covs = {root: np.zeros((4, 4))}
    moved = False
    for i, j in _bfs(parent, root):
        f = fields.get(i)
        if f is None or j not in params:
            continue
        own = jac @ f.params
        own_se = np.sqrt(np.maximum(np.einsum("kp,pq,kq->k", jac, f.cov, jac), 1e-12))
        if np.any(np.abs(own) > _SKIP_Z * own_se) and not _confirmed(small[j], small[i], f):
            f = replace(f, params=np.zeros(4))  # a bias, not a motion: this link moves nothing
        params[i] = params[j] + f.params
        covs[i] = covs[j] + f.cov
        if i not in valid:
            continue
        d = jac @ params[i]
        se = np.sqrt(np.maximum(np.einsum("kp,pq,kq->k", jac, covs[i], jac), 1e-12))
        shift[i] = float(np.abs(d).max()) * to_full
        noise[i] = float(se[np.argmax(np.abs(d))]) * to_full
        if np.any((np.abs(d) > _SKIP_Z * se) & (np.abs(d) * to_full > floor_px)):
            moved = True
    return not moved, shift, noise


def _pick_model(fields: dict[int, _Field | None], valid: list[int]) -> str:
    """The simplest motion model the measured patch displacements call for: similarity, then affine, then
    homography, each only when it lowers the residual sum of squares of the valid links significantly (F statistic
    over the extra parameters above ``_MODEL_F``; pooled over the links). Measured: 1-3 on synthetic similarity
    stacks (2.6-6.2: sub-pixel biases of the patch estimates), 31 for affine on the hand-held Mobile Depth keyboard
    stack (rolling shutter, perspective), whose residuals then drop from up to 0.7 px to 0.4 px."""
    fs = [f for i, f in fields.items() if f is not None and i in valid]
    if not fs:
        return "similarity"
    n_par = {"similarity": 4, "affine": 6, "homography": 8}

    def rss(model: str) -> float:
        return sum(f.rms[model] ** 2 * f.inliers for f in fs)

    def dof(model: str) -> int:
        return sum(2 * f.inliers - n_par[model] for f in fs)

    model = "similarity"
    for nxt in ("affine", "homography"):
        extra = (n_par[nxt] - n_par[model]) * len(fs)
        f_stat = ((rss(model) - rss(nxt)) / extra) / max(rss(nxt) / max(dof(nxt), 1), 1e-12)
        log.debug("motion model %s -> %s: F = %.1f", model, nxt, f_stat)
        if f_stat > _MODEL_F:
            model = nxt
    return model


def _residuals(
    pyrs: list[list[np.ndarray]], mats_work: list[np.ndarray], parent: dict[int, int], level: int, to_full: float
) -> np.ndarray:
    """Per layer, the registration error left after alignment (px, input resolution): the median displacement of the
    textured patches between the layer and its tree parent, both warped into the reference frame at pyramid ``level``
    (phase correlation; its sub-pixel estimate is biased towards whole pixels, so read values below ~0.2 px as
    "sub-pixel")."""
    n = len(mats_work)
    out = np.full(n, np.nan)
    s = np.diag([0.5**level, 0.5**level, 1.0])
    warped = {}

    def get(k: int) -> np.ndarray:
        if k not in warped:
            img = pyrs[k][level]
            mk = s @ mats_work[k] @ np.linalg.inv(s)
            warped[k] = cv2.warpPerspective(
                img, mk, img.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
        return warped[k]

    for i, j in parent.items():
        f = _patch_field(get(j), get(i))
        if f is not None:
            out[i] = f.median_shift * to_full
    return out


def _estimate(
    images: np.ndarray,
    *,
    mode: str,
    reference: int | None,
    max_size: int,
    skip_tolerance: float,
    limits: _Limits,
) -> AlignResult:
    n, c, h, w = images.shape
    scale = min(1.0, max_size / max(h, w))
    wsize = (max(round(h * scale), 1), max(round(w * scale), 1))
    to_work = _grid_scale((h, w), wsize)
    from_work = np.linalg.inv(to_work)

    def work_luma(i: int) -> np.ndarray:
        y = np.ascontiguousarray(luma(images[i]), dtype=np.float32)
        return y if wsize == (h, w) else cv2.resize(y, wsize[::-1], interpolation=cv2.INTER_AREA)

    lumas = [work_luma(i) for i in range(n)]
    pyrs = [_pyramid(_features(y)) for y in lumas]
    # the check level: the finest pyramid level no larger than _CHECK_SIZE (content analysis, registered check)
    check = next((k for k, lv in enumerate(pyrs[0]) if max(lv.shape) <= _CHECK_SIZE), len(pyrs[0]) - 1)
    to_full = (2.0**check) * (max(h, w) / max(wsize))  # check-level px -> input px
    small = [p[check] for p in pyrs]
    energy = np.stack([_patch_energy(y) for y in small])  # (N, K)

    invalid = _invalid_frames(images, energy)
    valid = [k for k in range(n) if k not in invalid]
    if invalid:
        log.warning(
            "distrusted layer(s) %s: never the reference, brightness or crop; they follow their nearest valid layer",
            ", ".join(f"{k} ({why})" for k, why in sorted(invalid.items())),
        )
    root, parent = _link_tree(energy, valid, reference)
    fields = {i: _patch_field(small[j], small[i]) for i, j in parent.items()}

    registered, shift_px, noise_px = _registered_check(
        small, fields, parent, root, valid, small[0].shape, to_full, skip_tolerance
    )
    if mode == "auto" and registered:
        log.info(
            "stack already registered (largest corner shift %.2f px, not above the estimate's noise): alignment "
            "skipped",
            float(np.nanmax(shift_px)),
        )
        res = _identity(n, c, root, (h, w), mode="none", skipped=True)
        res.invalid, res.shifts, res.noise, res.parents = invalid, shift_px, noise_px, parent
        return res
    model = _pick_model(fields, valid) if mode == "auto" else mode
    if mode == "auto":
        log.info(
            "stack not registered (largest corner shift %.2f px): aligning (%s)", float(np.nanmax(shift_px)), model
        )

    scores = np.full(n, np.nan)
    scores[root] = 1.0
    links: dict[int, np.ndarray] = {}
    failed: list[int] = []
    anchor_of: dict[int, int] = {}
    order = _bfs(parent, root)
    for i, j0 in order:
        j = j0
        while j in failed:  # align to the nearest non-failed layer on the way to the reference
            j = anchor_of[j]
        anchor_of[i] = j
        f = fields.get(i) if j == j0 else _patch_field(small[j], small[i])
        if f is not None:
            init = _project(_from_level(f.matrix, check), model)
            wlink, cc = _ecc_pyramid(pyrs[j], pyrs[i], init, model, start_level=check)
        else:
            wlink, cc = _ecc_pyramid(
                pyrs[j], pyrs[i], _from_level(_phase_init(pyrs[j][-1], pyrs[i][-1]), len(pyrs[0]) - 1), model
            )
        problem = _link_problem(wlink, cc, wsize, limits)
        if problem is not None:
            feat = _feature_init(lumas[j], lumas[i], model)
            if feat is not None:
                w2, cc2 = _ecc_pyramid(pyrs[j], pyrs[i], feat, model)
                p2 = _link_problem(w2, cc2, wsize, limits)
                if p2 is None or (np.isfinite(cc2) and not np.isfinite(cc)) or cc2 > cc:
                    wlink, cc, problem = w2, cc2, p2
        scores[i] = cc
        if problem is not None:
            log.warning(
                "alignment of layer %d to layer %d failed (%s); %s", i, j, problem, "it gets its neighbour's transform"
            )
            failed.append(i)
            wlink = np.eye(3)
        links[i] = wlink
    mats = [np.eye(3)] * n
    for i, _ in order:
        mats[i] = links[i] @ mats[anchor_of[i]]
    # measured one level finer than the check (phase correlation resolves ~0.1 px of the level it runs on)
    fine = max(check - 1, 0)
    residual = _residuals(pyrs, mats, anchor_of, fine, to_full / 2 ** (check - fine))
    full = np.stack([from_work @ m @ to_work for m in mats])
    full = full / full[:, 2:3, 2:3]
    return AlignResult(
        images=np.empty((0, c, 0, 0), np.float32),
        mode=model,
        reference=root,
        matrices=full,
        gains=np.ones((n, c)),
        offsets=np.zeros((n, c)),
        scores=scores,
        failed=sorted(failed),
        kept=list(range(n)),
        size=(h, w),
        invalid=invalid,
        shifts=shift_px,
        noise=noise_px,
        residuals=residual,
        parents=dict(anchor_of),
    )


# ----------------------------------------------------------------------------------------------------------------
# Applying transforms: output frame, warping, brightness
# ----------------------------------------------------------------------------------------------------------------


def _coverage(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: reference-frame pixels whose position in the layer (``m @ x``) lies inside it.

    The layer rectangle's preimage is a convex quadrilateral (projective maps keep lines straight), so each row's
    valid pixels form one interval bounded by the four edge lines: O(H) work per layer instead of mapping every pixel.
    """
    h, w = size
    inv = np.linalg.inv(m)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1.0]]).T
    q = inv @ corners
    q = (q[:2] / q[2]).T  # (4, 2) preimage corners, in order around the quad
    ys = np.arange(h, dtype=np.float64)
    lo, hi = np.full(h, -np.inf), np.full(h, np.inf)
    centre = q.mean(0)
    eps = 1e-6
    for k in range(4):
        p0, p1 = q[k], q[(k + 1) % 4]
        # half-plane a*x + b*y + c >= 0 that contains the quad's centre
        a, b = p1[1] - p0[1], p0[0] - p1[0]
        c = -(a * p0[0] + b * p0[1])
        if a * centre[0] + b * centre[1] + c < 0:
            a, b, c = -a, -b, -c
        if abs(a) < 1e-12:
            lo[b * ys + c < -eps] = np.inf  # a horizontal edge: rows outside it are empty
            continue
        bound = -(b * ys + c) / a
        if a > 0:
            lo = np.maximum(lo, bound - eps)
        else:
            hi = np.minimum(hi, bound + eps)
    xs = np.arange(w, dtype=np.float64)
    return (xs[None, :] >= lo[:, None]) & (xs[None, :] <= hi[:, None])


def _largest_inner_rect(valid: np.ndarray) -> tuple[int, int, int, int]:
    """Greedy largest axis-aligned rectangle of True pixels: repeatedly drop the border row/column with the
    largest fraction of invalid pixels. Exact enough for the convex regions warped rectangles intersect to."""
    bad = ~valid
    y0, y1, x0, x1 = 0, valid.shape[0], 0, valid.shape[1]
    rows = bad.sum(1).astype(np.int64)  # invalid count per row within [x0, x1)
    cols = bad.sum(0).astype(np.int64)  # invalid count per column within [y0, y1)
    while y1 - y0 > 1 and x1 - x0 > 1 and rows[y0:y1].any():
        width, height = x1 - x0, y1 - y0
        cand = [
            (rows[y0] / width, "top"),
            (rows[y1 - 1] / width, "bottom"),
            (cols[x0] / height, "left"),
            (cols[x1 - 1] / height, "right"),
        ]
        _, side = max(cand)
        if side == "top":
            cols[x0:x1] -= bad[y0, x0:x1]
            y0 += 1
        elif side == "bottom":
            cols[x0:x1] -= bad[y1 - 1, x0:x1]
            y1 -= 1
        elif side == "left":
            rows[y0:y1] -= bad[y0:y1, x0]
            x0 += 1
        else:
            rows[y0:y1] -= bad[y0:y1, x1 - 1]
            x1 -= 1
    return x0, y0, x1 - x0, y1 - y0


def _apply(
    images: np.ndarray, est: AlignResult, *, frame: str, drop_failed: bool, match_brightness: bool
) -> AlignResult:
    n, c, h, w = images.shape
    ref = est.reference
    mats = est.matrices
    kept = [i for i in range(n) if not (drop_failed and i in est.failed and i != ref)]
    trusted = [i for i in kept if i not in est.invalid] or kept
    if drop_failed and est.failed:
        log.warning(
            "dropping %d layer(s) whose alignment failed: %s", len([i for i in est.failed if i != ref]), est.failed
        )
    if frame == "crop":
        valid = np.ones((h, w), bool)
        for i in trusted:  # a distrusted layer's (maybe failed) transform never shrinks the frame
            if not np.allclose(mats[i], np.eye(3), atol=1e-9):
                valid &= _coverage(mats[i], (h, w))
        x0, y0, cw, chh = _largest_inner_rect(valid)
        if cw * chh < 0.25 * h * w:
            log.warning(
                "layers overlap on only %dx%d of %dx%d pixels; check the alignment (or use frame='fill')", cw, chh, w, h
            )
    else:
        x0, y0, cw, chh = 0, 0, w, h
    shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
    from .io import CompactLayer, CompactStack  # (imported here: io is not needed to align float arrays)

    # a compact (8/16-bit) input stays compact: aligned layers are kept as 16-bit integers (half of float32, exact
    # for 8-bit sources where untouched), so alignment fits the memory the learned methods fuse in
    compact = isinstance(images, CompactStack)
    out = [] if compact else np.empty((len(kept), c, chh, cw), np.float32)
    lows: list[np.ndarray] = []  # low-passed copy of each output layer, for the brightness consensus
    s_low = min(1.0, 48.0 / max(chh, cw))  # ~48 px: each sample averages well beyond any defocus blur
    low_size = (max(round(cw * s_low), 4), max(round(chh * s_low), 4))

    def store(o: int, layer: np.ndarray) -> None:
        lows.append(np.stack([cv2.resize(ch, low_size, interpolation=cv2.INTER_AREA) for ch in layer]))
        if compact:
            out.append(np.round(layer * np.float32(_U16)).astype(np.uint16))
        else:
            out[o] = layer

    ref_hwc = np.ascontiguousarray(np.asarray(images[ref]).transpose(1, 2, 0)) if frame == "fill" else None
    for o, i in enumerate(kept):
        m = mats[i]
        if np.allclose(m, np.eye(3), atol=1e-9):
            store(o, np.asarray(images[i][:, y0 : y0 + chh, x0 : x0 + cw], np.float32))
            continue
        src = np.ascontiguousarray(np.asarray(images[i]).transpose(1, 2, 0))
        mm = m @ shift
        flags = _INTERPOLATION | cv2.WARP_INVERSE_MAP
        if abs(mm[2, 0]) < 1e-12 and abs(mm[2, 1]) < 1e-12:
            warped = cv2.warpAffine(
                src, (mm[:2] / mm[2, 2]).astype(np.float64), (cw, chh), flags=flags, borderMode=cv2.BORDER_REPLICATE
            )
        else:
            warped = cv2.warpPerspective(src, mm, (cw, chh), flags=flags, borderMode=cv2.BORDER_REPLICATE)
        warped = warped.reshape(chh, cw, c)
        if frame == "fill":
            outside = ~_coverage(m, (h, w))
            warped[outside] = ref_hwc[outside]
        store(o, np.clip(warped, 0.0, 1.0).transpose(2, 0, 1))  # Lanczos overshoots at edges

    gains, offsets = est.gains.copy(), est.offsets.copy()
    if match_brightness and not est.skipped and np.allclose(gains, 1) and np.allclose(offsets, 0):
        gains, offsets = _match_brightness(lows, [kept.index(i) for i in trusted], kept, gains, offsets)
    for o, i in enumerate(kept):
        if not (np.allclose(gains[i], 1) and np.allclose(offsets[i], 0)):
            g, b = gains[i][:, None, None].astype(np.float32), offsets[i][:, None, None].astype(np.float32)
            if compact:
                out[o] = np.round(np.clip(out[o] / np.float32(_U16) * g + b, 0, 1) * np.float32(_U16)).astype(np.uint16)
            else:
                out[o] = np.clip(out[o] * g + b, 0, 1)
    if compact:
        out = CompactStack([CompactLayer(raw, _U16, c) for raw in out])
    return AlignResult(
        images=out,
        mode=est.mode,
        reference=ref,
        matrices=mats,
        gains=gains,
        offsets=offsets,
        scores=est.scores,
        failed=list(est.failed),
        kept=kept,
        frame=frame,
        crop=(int(x0), int(y0), int(cw), int(chh)),
        size=(h, w),
        invalid=dict(est.invalid),
        shifts=est.shifts,
        noise=est.noise,
        residuals=est.residuals,
        parents=dict(est.parents),
    )


def _match_brightness(
    lows: list[np.ndarray], trusted: list[int], kept: list[int], gains: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fit every trusted output layer's per-channel exposure gain to the consensus of the trusted layers: the median
    over them of their mean brightness on the common frame (low-passed, pixels unclipped in every trusted layer).
    No single frame sets the brightness, an odd one is outvoted; a ratio of means because defocus keeps means but
    changes contrast. Gains within 0.5 % of 1 are left at 1; distrusted layers keep gain 1."""
    if len(trusted) < 2:
        return gains, offsets
    low = np.stack([lows[o] for o in trusted]).astype(np.float64)  # (T, C, h, w)
    for ch in range(low.shape[1]):
        x = low[:, ch]
        keep = ((x > 0.02) & (x < 0.98)).all(0)
        if keep.sum() < 16:
            continue
        means = x[:, keep].mean(1)  # (T,)
        if means.min() < 0.02:
            continue
        g = np.median(means) / means
        g[(g < 0.5) | (g > 2.0) | (np.abs(g - 1) < 0.005)] = 1.0  # larger jumps are not drift: leave those alone
        for t, o in enumerate(trusted):
            gains[kept[o], ch] = g[t]
    return gains, offsets
