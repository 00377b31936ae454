"""Estimation of every layer's transform to the reference, before any layer is warped.

On a copy no larger than ``max_size`` pixels: invalid frames and the link tree from the check level's focus profiles
(:mod:`.invalid_frames`, :mod:`.link_tree`), the registered check and the motion model from patch displacement fields
(:mod:`.patches`), then each link refined by ECC (:mod:`.ecc`) from the patch estimate, with ORB features + RANSAC
(:mod:`.features`) as a second initialisation when ECC fails or fits badly. A link that still does not fit (low
correlation, or an implausible transform) is reported with a warning; its layer gets its parent's transform.
Transforms are rescaled to full resolution.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..color import luma
from .ecc import _ecc_pyramid, _features, _phase_init, _pyramid
from .features import _feature_init
from .invalid_frames import _invalid_frames
from .link_tree import _bfs, _link_tree
from .patches import _anisotropy, _patch_energy, _patch_field, _pick_model, _registered_check, _residuals
from .transforms import _from_level, _grid_scale, _max_corner_shift, _project

log = logging.getLogger("stackmff")

_CHECK_SIZE = 320  # longer side of the copy on which `auto` decides whether a stack is already registered


@dataclass(frozen=True)
class _Limits:
    min_score: float
    max_scale_change: float
    max_rotation_deg: float
    max_shift: float


@dataclass
class _Estimate:
    """The transforms for a stack (estimated, or read from a transforms file) before any layer is warped; the fields
    are :class:`~stackmff.align.AlignResult`'s of the same names."""

    mode: str
    reference: int
    matrices: np.ndarray  # (N, 3, 3) float64, reference -> layer pixel coordinates at input resolution
    gains: np.ndarray  # (N, C)
    offsets: np.ndarray  # (N, C)
    scores: np.ndarray  # (N,)
    size: tuple[int, int]  # (height, width) of the input layers
    failed: list[int] = field(default_factory=list)
    skipped: bool = False
    invalid: dict[int, str] = field(default_factory=dict)
    shifts: np.ndarray | None = None
    noise: np.ndarray | None = None
    residuals: np.ndarray | None = None
    parents: dict[int, int] = field(default_factory=dict)


def _identity(n: int, c: int, reference: int, size: tuple[int, int]) -> _Estimate:
    """Identity transforms: the stack is left as it is (mode ``none``, skipped)."""
    scores = np.full(n, np.nan)
    scores[reference] = 1.0
    return _Estimate(
        mode="none",
        reference=reference,
        matrices=np.tile(np.eye(3), (n, 1, 1)),
        gains=np.ones((n, c)),
        offsets=np.zeros((n, c)),
        scores=scores,
        size=size,
        skipped=True,
    )


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


def _estimate(
    images: np.ndarray,
    *,
    mode: str,
    reference: int | None,
    max_size: int,
    skip_tolerance: float,
    limits: _Limits,
) -> _Estimate:
    """Every layer's transform to the reference, for ``images (N, C, H, W)`` (see the module notes)."""
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
        est = _identity(n, c, root, (h, w))
        est.invalid, est.shifts, est.noise, est.parents = invalid, shift_px, noise_px, parent
        return est
    if mode == "auto":  # the affine part is measured at working resolution: the 320 px check copy resolves too little
        aniso = _anisotropy(pyrs, fields, parent, root, valid, check, 0, to_full / 2**check)
        model = _pick_model(fields, valid, aniso)
    else:
        model = mode
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
    return _Estimate(
        mode=model,
        reference=root,
        matrices=full,
        gains=np.ones((n, c)),
        offsets=np.zeros((n, c)),
        scores=scores,
        size=(h, w),
        failed=sorted(failed),
        invalid=invalid,
        shifts=shift_px,
        noise=noise_px,
        residuals=residual,
        parents=dict(anchor_of),
    )
