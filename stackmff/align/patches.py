"""Patch measurements on the check level (a copy of <= 320 px): focus profiles and displacement fields per link, and
what is decided from them: is the stack registered, which motion model, how much misregistration is left.

Per link, patch displacements by phase correlation and a robust similarity fit give the transform AND its uncertainty
(parameter covariance from the patches' spread). ``auto`` leaves the stack untouched unless some valid layer's
chained corner displacement exceeds ``_SKIP_Z`` of its standard errors and ``skip_tolerance`` px
(:func:`_registered_check`). The motion model (similarity, affine, homography; :func:`_pick_model`): affine when the
layers' anisotropic part, measured by the same patch fits at working resolution (:func:`_anisotropy`), moves a corner
clearly; homography by an F test on the check-level fits.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .link_tree import _bfs

log = logging.getLogger("stackmff")

_PATCH = 48  # side of the check-level patches whose phase correlation measures displacement fields and focus
_MODEL_F = 10.0  # F statistic above which a richer motion model is worth its parameters (see _pick_model)
_ANISO_PX = 0.6  # an anisotropic part (affine, not similarity) moving some corner less than this is left out
_SKIP_Z = 5.0  # a corner displacement counts only above this many of its standard errors (see _registered_check)
_CONFIRM_RATIO = 0.6  # ... and only when its warp leaves less than this share of the pair's decorrelation


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


@dataclass
class _Field:
    """A similarity fitted to patch displacements of one link (check level): matrix, parameter covariance."""

    matrix: np.ndarray  # 3x3 template -> input, check-level pixels
    params: np.ndarray  # (4,) a, b, tx, ty of d(x) = [[a, -b], [b, a]] (x - c) / r + t  (displacement field)
    cov: np.ndarray  # (4, 4)
    rms: dict[str, float]  # residual RMS (px) of each motion model fitted to the same inlier patches
    inliers: int
    median_shift: float  # median displacement magnitude over the inlier patches (px)
    anisotropy: np.ndarray = field(default_factory=lambda: np.zeros(2))  # (2,) non-similarity part of the affine fit
    anisotropy_cov: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))


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
            # the part of the affine displacement no similarity has: anisotropic scale and shear (normalised units)
            to_aniso = np.array([[0.5, 0, 0, 0, -0.5, 0], [0, 0.5, 0, 0.5, 0, 0]])
            aniso = to_aniso @ pa
            cov_a = float(ra @ ra) / max(int(rows.sum()) - 6, 1) * np.linalg.inv(a_aff.T @ a_aff)
            aniso_cov = to_aniso @ cov_a @ to_aniso.T
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
    return _Field(
        matrix=m,
        params=p,
        cov=cov,
        rms=rms,
        inliers=int(keep.sum()),
        median_shift=med,
        anisotropy=aniso,
        anisotropy_cov=aniso_cov,
    )


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


def _anisotropy(
    pyrs: list[list[np.ndarray]],
    fields: dict[int, _Field | None],
    parent: dict[int, int],
    root: int,
    valid: list[int],
    check: int,
    level: int,
    to_full: float,
) -> tuple[float, float]:
    """The largest anisotropic part (anisotropic scale + shear: what an affine has and a similarity has not) of any
    valid layer's motion from the reference, as a corner displacement at input resolution, and its standard error.

    Measured at pyramid ``level`` (finer than the check level ``check``, whose 48 px patches resolve too little of
    it; :func:`_pick_model` has the numbers): each link's input is first warped by its check-level similarity, so the finer patches only see what is
    left, and the anisotropic parts of the links add up along the tree (first order), like their covariances.
    ``to_full`` converts ``level`` pixels to input pixels.
    """
    s = np.diag([2.0 ** (check - level), 2.0 ** (check - level), 1.0])
    acc = {root: (np.zeros(2), np.zeros((2, 2)))}
    worst = (0.0, 0.0)
    for i, j in _bfs(parent, root):
        if j not in acc:
            continue
        f = fields.get(i)
        g = None
        if f is not None:
            tmpl, inp = pyrs[j][level], pyrs[i][level]
            m = s @ f.matrix @ np.linalg.inv(s)
            warped = cv2.warpPerspective(
                inp, m, tmpl.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
            )
            g = _patch_field(tmpl, warped)
        acc[i] = acc[j] if g is None else (acc[j][0] + g.anisotropy, acc[j][1] + g.anisotropy_cov)
        if i in valid:
            mag = float(np.linalg.norm(acc[i][0])) * to_full
            if mag > worst[0]:
                worst = (mag, float(np.sqrt(max(np.trace(acc[i][1]) / 2, 0.0))) * to_full)
    return worst


def _pick_model(
    fields: dict[int, _Field | None], valid: list[int], anisotropy: tuple[float, float] | None = None
) -> str:
    """The simplest motion model the measured patch displacements call for: similarity, then affine, then homography.

    Affine when the layers' anisotropic part (``anisotropy``: largest corner displacement and its standard error,
    input pixels, from :func:`_anisotropy` at working resolution) is above ``_ANISO_PX`` and ``_SKIP_Z`` standard
    errors. Measured: 0.14-0.24 px on synthetic similarity stacks (defocus biases of the patch estimates), 0.10-0.53
    px on the real stacks ring, small_stuff and bug; 0.68 px on the 1024 px PCB sample and 1.16 px on its 2048 px
    original (where affine agrees with focus-stack's registration within 0.24 px, similarity only within 0.9 px),
    1.59 px on the hand-held Mobile Depth keyboard stack (rolling shutter). On the check level (320 px) the same
    measure read 0.56-0.71 px on synthetic similarity stacks, as much as on the PCB. Without ``anisotropy`` (and
    always for homography) an F test on the check level's residual sums of squares decides: a richer model when it
    lowers them significantly (F statistic over the extra parameters above ``_MODEL_F``; pooled over the links); it
    missed the PCB's affine there (F 3.9 against 2.6-6.2 on synthetic similarity stacks) and grows with resolution on
    any stack (F 11-45 at 512 px on the synthetic similarity stacks), so it does not move to a finer level.
    """
    fs = [f for i, f in fields.items() if f is not None and i in valid]
    if not fs:
        return "similarity"
    n_par = {"similarity": 4, "affine": 6, "homography": 8}

    def rss(model: str) -> float:
        return sum(f.rms[model] ** 2 * f.inliers for f in fs)

    def dof(model: str) -> int:
        return sum(2 * f.inliers - n_par[model] for f in fs)

    def f_stat(model: str, nxt: str) -> float:
        extra = (n_par[nxt] - n_par[model]) * len(fs)
        return ((rss(model) - rss(nxt)) / extra) / max(rss(nxt) / max(dof(nxt), 1), 1e-12)

    if anisotropy is None:
        affine = f_stat("similarity", "affine") > _MODEL_F
    else:
        mag, se = anisotropy
        affine = mag > _ANISO_PX and mag > _SKIP_Z * se
        log.debug("motion model: anisotropic part %.2f +- %.2f px -> %s", mag, se, "affine" if affine else "similarity")
    model = "affine" if affine else "similarity"
    f_hom = f_stat(model, "homography")
    log.debug("motion model %s -> homography: F = %.1f", model, f_hom)
    return "homography" if f_hom > _MODEL_F else model


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
