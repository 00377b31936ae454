"""Procedural RGB-D scenes with exact depth.

The procedural generator is the project's embedded default training source: it needs no download and produces an
unlimited number of scenes whose disparity is exact by construction (painter's algorithm, far to near). A scene is a
textured background plane (slanted), optionally a receding floor plane, and several occluding objects (ellipses,
polygons, rotated rectangles, noise blobs, thin sticks, glyphs) each at its own depth, possibly slanted. Textures come
from images that ship with scikit-image (loaded once and cached) mixed with procedural patterns (multi-octave value
noise, stripes, checkers, dots, text) and always a fine-scale noise component, so that every region carries texture
at several scales and a focus measure can see defocus everywhere.

Shapes: ``image`` is ``(3, H, W)`` float32 RGB in [0, 1]; ``disparity`` is ``(H, W)`` float32 in [0, 1], larger =
nearer (disparity ~ 1 / depth).
"""

from __future__ import annotations

import functools
import logging
import string

import cv2
import numpy as np

from ..errors import StackMFFError
from .rgbd import RGBDScene

__all__ = ["make_scene", "texture_bank"]

log = logging.getLogger("stackmff")

# scikit-image sample images that are bundled inside the wheel (no pooch download).
_BANK_NAMES = (
    "astronaut",
    "camera",
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "moon",
    "text",
    "page",
    "brick",
    "grass",
    "gravel",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "clock",
    "cell",
)
_BANK_MAX_SIDE = 512
_SHAPES = ("ellipse", "polygon", "rectangle", "blob", "stick", "glyph")
_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
)


# --------------------------------------------------------------------------------------------------------------------
# texture bank


@functools.lru_cache(maxsize=1)
def texture_bank() -> tuple[np.ndarray, ...]:
    """The scikit-image sample images as ``(H, W, 3)`` float32 RGB in [0, 1], at most 512 px a side (cached).

    Grey images are kept grey (three equal channels); they are tinted when sampled.
    """
    import skimage.data

    out = []
    for name in _BANK_NAMES:
        try:
            img = np.asarray(getattr(skimage.data, name)())
        except Exception as exc:  # pragma: no cover - depends on the installed scikit-image
            log.debug("texture %s unavailable: %s", name, exc)
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[..., :3]
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = img.astype(np.float32) / (255.0 if img.dtype != np.float32 and img.max() > 1.0 else 1.0)
        h, w = img.shape[:2]
        s = _BANK_MAX_SIDE / max(h, w)
        if s < 1.0:
            img = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32))
    if not out:  # pragma: no cover
        raise StackMFFError("no scikit-image sample images found; reinstall scikit-image (pip install scikit-image)")
    return tuple(out)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0.1, 1.0) * 255, rng.uniform(0.15, 1.0) * 255]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _colourise(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Map a grey pattern (h, w) in [0, 1] onto a random two-colour ramp -> (h, w, 3)."""
    a, b = _random_colour(rng), _random_colour(rng)
    if np.abs(a - b).sum() < 0.4:  # keep contrast so the pattern stays visible
        b = 1.0 - a
    return a + (b - a) * g[..., None]


def _bank_patch(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    bank = texture_bank()
    src = bank[int(rng.integers(len(bank)))]
    sh, sw = src.shape[:2]
    scale = float(np.exp(rng.uniform(np.log(0.3), np.log(2.0))))  # output px per source px
    ch, cw = max(2, round(h / scale)), max(2, round(w / scale))
    if ch > sh or cw > sw:  # source too small for that zoom: mirror-tile it
        src = cv2.copyMakeBorder(src, 0, max(0, ch - sh), 0, max(0, cw - sw), cv2.BORDER_REFLECT_101)
    crop = _oriented_crop(src, ch, cw, rng)
    patch = cv2.resize(np.ascontiguousarray(crop), (w, h), interpolation=cv2.INTER_LINEAR)
    if float(np.ptp(patch[..., 0] - patch[..., 1])) < 1e-3 and float(np.ptp(patch[..., 1] - patch[..., 2])) < 1e-3:
        patch = _colourise(patch[..., 0], rng)
    else:
        patch = patch[..., rng.permutation(3)]
    return patch


def _value_noise(h: int, w: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    gh, gw = max(2, int(np.ceil(h / cell)) + 2), max(2, int(np.ceil(w / cell)) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    up = cv2.resize(grid, (round(gw * cell), round(gh * cell)), interpolation=cv2.INTER_CUBIC)
    oy, ox = int(rng.integers(max(1, up.shape[0] - h + 1))), int(rng.integers(max(1, up.shape[1] - w + 1)))
    out = up[oy : oy + h, ox : ox + w]
    if out.shape != (h, w):
        out = cv2.resize(out, (w, h))
    return out


def _fractal_noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    acc = np.zeros((h, w), np.float32)
    amp, total = 1.0, 0.0
    cell = float(rng.uniform(16, 64))
    while cell >= 1.5:
        acc += amp * _value_noise(h, w, cell, rng)
        total += amp
        amp *= float(rng.uniform(0.45, 0.75))
        cell /= 2.0
    acc /= total
    lo, hi = float(acc.min()), float(acc.max())
    return (acc - lo) / max(hi - lo, 1e-6)


def _coords(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    theta = rng.uniform(0, np.pi)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x * np.float32(np.cos(theta)) + y * np.float32(np.sin(theta)), y * np.float32(
        np.cos(theta)
    ) - x * np.float32(np.sin(theta))


def _procedural_pattern(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A grey pattern (h, w) in [0, 1]: stripes, checker, dots, text or fractal noise."""
    kind = rng.integers(5)
    if kind == 0:  # stripes, sine or square
        u, _ = _coords(h, w, rng)
        period = float(np.exp(rng.uniform(np.log(3.0), np.log(24.0))))
        s = np.sin(u * np.float32(2 * np.pi / period) + np.float32(rng.uniform(0, 6.3)))
        return (s > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * s
    if kind == 1:  # checker
        u, v = _coords(h, w, rng)
        c = float(rng.uniform(3.0, 20.0))
        return ((np.floor(u / c) + np.floor(v / c)) % 2).astype(np.float32)
    if kind == 2:  # dots
        img = np.zeros((h, w), np.float32)
        n = max(4, int(h * w / rng.uniform(60, 400)))
        for _ in range(min(n, 400)):
            r = int(rng.integers(1, max(2, min(h, w) // 12 + 2)))
            cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), r, float(rng.uniform(0.3, 1.0)), -1)
        return img
    if kind == 3:  # text-like lines
        img = np.full((h, w), int(rng.integers(0, 80)), np.uint8)  # putText draws on 8-bit images only
        font = _FONTS[int(rng.integers(len(_FONTS)))]
        fs = float(rng.uniform(0.3, 1.2))
        thick = int(rng.integers(1, 3))
        (_, th), _ = cv2.getTextSize("Ag", font, fs, thick)
        step = th + max(2, int(th * rng.uniform(0.3, 1.0)))
        letters = np.array(list(string.ascii_letters + string.digits + "  .,;"))
        y = int(rng.integers(th // 2 + 1, step + 1))
        while y < h + th:
            line = "".join(rng.choice(letters, size=max(4, w // max(4, th // 2))))
            cv2.putText(img, line, (int(rng.integers(-20, 1)), y), font, fs, int(rng.integers(180, 256)), thick)
            y += step
        return img.astype(np.float32) / np.float32(255.0)
    return _fractal_noise(h, w, rng)


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """A textured RGB patch (h, w, 3) float32 in [0, 1] with detail at several scales."""
    if rng.random() < 0.6:
        tex = _bank_patch(h, w, rng)
    else:
        tex = _colourise(_procedural_pattern(h, w, rng), rng)
    # Mix in a second pattern and fine noise so that flat parts of a photo (sky, black studio background) still
    # carry high-frequency detail that defocus visibly removes.
    if rng.random() < 0.35:
        overlay = _colourise(_procedural_pattern(h, w, rng), rng)
        a = np.float32(rng.uniform(0.15, 0.4))
        tex = tex * (1 - a) + overlay * a
    std = float(tex.std())
    if std < 0.12:  # flat, dim photo crops: stretch contrast about the mean
        mean = tex.mean((0, 1), keepdims=True)
        tex = mean + (tex - mean) * np.float32(0.12 / max(std, 1e-3))
    fine = _value_noise(h, w, float(rng.uniform(1.0, 2.5)), rng) - 0.5
    tex = tex + np.float32(rng.uniform(0.08, 0.2)) * fine[..., None]
    return np.clip(tex, 0.0, 1.0, out=tex).astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------------------
# shapes


def _shape_mask(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """A random object mask (uint8 in the bbox) and its bbox (y0, y1, x0, x1) clipped to the frame."""
    size = min(h, w)
    kind = _SHAPES[int(rng.choice(len(_SHAPES), p=[0.22, 0.22, 0.16, 0.18, 0.12, 0.10]))]
    r = float(np.exp(rng.uniform(np.log(0.07), np.log(0.4)))) * size
    cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
    ext = int(np.ceil(r * (2.2 if kind == "stick" else 1.5))) + 2
    y0, y1 = max(0, int(cy) - ext), min(h, int(cy) + ext)
    x0, x1 = max(0, int(cx) - ext), min(w, int(cx) + ext)
    if y1 - y0 < 3 or x1 - x0 < 3:
        return None
    bh, bw = y1 - y0, x1 - x0
    m = np.zeros((bh, bw), np.uint8)
    c = (round(cx - x0), round(cy - y0))
    if kind == "ellipse":
        axes = (max(1, round(r)), max(1, round(r * rng.uniform(0.3, 1.0))))
        cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif kind == "polygon":
        k = int(rng.integers(3, 10))
        ang = np.sort(rng.uniform(0, 2 * np.pi, k))
        rad = r * rng.uniform(0.35 if rng.random() < 0.5 else 0.8, 1.0, k)
        pts = np.stack([c[0] + rad * np.cos(ang), c[1] + rad * np.sin(ang)], 1)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
    elif kind == "rectangle":
        box = cv2.boxPoints(((c[0], c[1]), (2 * r, 2 * r * rng.uniform(0.2, 1.0)), float(rng.uniform(0, 180))))
        cv2.fillPoly(m, [np.round(box).astype(np.int32)], 1)
    elif kind == "blob":
        noise = _value_noise(bh, bw, max(2.0, r / 2), rng)
        yy, xx = np.mgrid[0:bh, 0:bw]
        fall = 1.0 - np.hypot(yy - c[1], xx - c[0]) / max(r, 1.0)
        m = ((0.6 * fall + 0.4 * noise) > 0.45).astype(np.uint8)
    elif kind == "stick":
        ang = rng.uniform(0, np.pi)
        d = np.array([np.cos(ang), np.sin(ang)]) * r * 2
        p0 = np.round(np.array(c) - d).astype(int)
        p1 = np.round(np.array(c) + d).astype(int)
        thick = max(1, round(r * rng.uniform(0.05, 0.25)))
        cv2.line(m, tuple(int(v) for v in p0), tuple(int(v) for v in p1), 1, thick)
    else:  # glyph: one large character
        ch = str(rng.choice(list(string.ascii_letters + string.digits + "&%#@")))
        font = _FONTS[int(rng.integers(len(_FONTS) - 1))]
        fs = cv2.getFontScaleFromHeight(font, max(4, round(2 * r)), max(1, round(r / 5)))
        (tw, th), _ = cv2.getTextSize(ch, font, fs, max(1, round(r / 5)))
        cv2.putText(m, ch, (c[0] - tw // 2, c[1] + th // 2), font, fs, 1, max(1, round(r / 5)))
    if not m.any():
        return None
    return m, (y0, y1, x0, x1)


def _as_rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (int, np.integer)) or (isinstance(seed, tuple) and all(isinstance(s, int) for s in seed)):
        return np.random.default_rng(seed)
    raise StackMFFError(f"seed must be an int or a numpy Generator, got {type(seed).__name__}.")


def make_scene(
    seed: int | np.random.Generator,
    height: int,
    width: int,
    *,
    n_objects: tuple[int, int] = (3, 9),
    floor_prob: float = 0.4,
    slant: float = 0.25,
    min_disparity_range: float = 0.4,
) -> RGBDScene:
    """Generate one procedural RGB-D scene with exact disparity.

    Args:
        seed: an int (deterministic) or a numpy Generator (advanced in place).
        height: scene height H in pixels (>= 8).
        width: scene width W in pixels (>= 8).
        n_objects: inclusive range of the number of occluding objects.
        floor_prob: probability of a receding floor plane below a random horizon.
        slant: maximal disparity change across the frame of the background plane and across an object.
        min_disparity_range: the disparity is stretched (affinely, so it stays exact) to span at least this range.

    Returns:
        RGBDScene with ``image`` ``(3, H, W)`` float32 in [0, 1] and ``disparity`` ``(H, W)`` float32 in [0, 1]
        (larger = nearer), consistent by construction: each pixel shows the surface whose disparity is stored.

    Examples:
        >>> s = make_scene(0, 64, 96)
        >>> s.image.shape, s.disparity.shape, s.image.dtype
        ((3, 64, 96), (64, 96), dtype('float32'))
    """
    if height < 8 or width < 8:
        raise StackMFFError(f"scene size must be at least 8x8, got {height}x{width}.")
    if n_objects[0] < 0 or n_objects[1] < n_objects[0]:
        raise StackMFFError(f"n_objects must be a range (lo, hi) with 0 <= lo <= hi, got {n_objects}.")
    rng = _as_rng(seed)
    h, w = int(height), int(width)
    yy = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5)[:, None]
    xx = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5)[None, :]

    # background plane, far away and slanted
    d0 = rng.uniform(0.0, 0.3)
    gx, gy = rng.uniform(-slant, slant, 2)
    disp = np.broadcast_to(np.float32(d0) + np.float32(gx) * xx + np.float32(gy) * yy, (h, w)).copy()
    image = _texture(h, w, rng)

    if rng.random() < floor_prob:  # receding floor: nearer toward the bottom of the frame
        horizon = int(rng.uniform(0.3, 0.75) * h)
        fh = h - horizon
        if fh >= 2:
            near = rng.uniform(0.4, 0.8)
            at_horizon = float(disp[horizon].mean())
            ramp = np.linspace(at_horizon, at_horizon + near, fh, dtype=np.float32)[:, None]
            disp[horizon:] = np.broadcast_to(ramp, (fh, w))
            image[horizon:] = _texture(fh, w, rng)

    n = int(rng.integers(n_objects[0], n_objects[1] + 1))
    depths = np.sort(rng.uniform(0.15, 1.0, n))  # far -> near: painter's algorithm gives exact occlusion
    for d in depths:
        shape = None
        for _ in range(4):
            shape = _shape_mask(h, w, rng)
            if shape is not None:
                break
        if shape is None:
            continue
        m, (y0, y1, x0, x1) = shape
        sel = m.astype(bool)
        bh, bw = y1 - y0, x1 - x0
        od = np.full((bh, bw), d, np.float32)
        if rng.random() < 0.5:  # slanted object surface
            sx, sy = rng.uniform(-slant, slant, 2) * 0.5
            od += np.float32(sx) * xx[:, x0:x1] + np.float32(sy) * yy[y0:y1]
        # an object must stay in front of what it occludes, otherwise the painted order would lie about depth
        region = disp[y0:y1, x0:x1]
        od = np.maximum(od, np.where(sel, region, -np.inf).max() + 0.02) if rng.random() < 0.5 else od
        keep = sel & (od > region)
        if not keep.any():
            continue
        tex = _texture(bh, bw, rng)
        region[keep] = od[keep]
        image[y0:y1, x0:x1][keep] = tex[keep]

    disp = _fit_disparity(disp, min_disparity_range)
    return RGBDScene(image=np.ascontiguousarray(image.transpose(2, 0, 1)), disparity=disp, name="procedural")


def _oriented_crop(src: np.ndarray, ch: int, cw: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``(ch, cw)`` crop of ``src`` (H, W, C), turned by a random multiple of 90 degrees (a view, not a
    copy; turned by 90/270 degrees it is ``(cw, ch)``)."""
    sh, sw = src.shape[:2]
    y0, x0 = int(rng.integers(sh - ch + 1)), int(rng.integers(sw - cw + 1))
    crop = src[y0 : y0 + ch, x0 : x0 + cw]
    k = int(rng.integers(4))
    if k % 2:
        crop = crop.transpose(1, 0, 2)
    if k >= 2:
        crop = crop[::-1]
    return crop


def _fit_disparity(disp: np.ndarray, min_range: float) -> np.ndarray:
    """Stretch a disparity map to span at least ``min_range`` inside [0, 1] (float32).

    An affine map keeps the depth order and the plane geometry exact: stretch to the minimal range and fit [0, 1].
    """
    lo, hi = float(disp.min()), float(disp.max())
    span = min(max(hi - lo, min_range), 1.0)
    new_lo = min(max(lo, 0.0), 1.0 - span)
    disp = (disp - np.float32(lo)) * np.float32(span / max(hi - lo, 1e-6)) + np.float32(new_lo)
    return np.clip(disp, 0.0, 1.0).astype(np.float32)
