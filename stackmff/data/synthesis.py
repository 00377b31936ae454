"""Focal stack synthesis from an all-in-focus image and its depth.

Two synthesis modes:

- :func:`synthesize_upstream` reproduces the public StackMFF-V3 ``make_dataset.py`` recipe (see ``SPEC.md``): the
  8-bit depth map is cut into N equal bins over [0, 255]; layer k shows, at the pixels of bin d, the WHOLE image
  Gaussian-blurred with kernel size ``2|d - k| + 1`` (OpenCV sigma from the kernel size); hard-mask compositing,
  no occlusion model, no noise. GT focus index = the bin.
- :func:`synthesize_physical` (ours) is a thin-lens model: circle-of-confusion radius ``max_coc * |disparity - focus
  disparity|`` with a disc PSF, far-to-near layered compositing of depth slabs (each slab is blurred together with
  its alpha mask, so the blur of a near object spreads over the background), Poisson-Gaussian sensor noise, and
  optional focus breathing (per-layer magnification about the centre) and exposure jitter. GT focus index = the
  layer whose focus disparity is nearest the pixel's disparity.

The "general" augmentation of the synthesised stacks (layer shuffling, invalid layers, JPEG round trips) is in
:mod:`stackmff.data.augment`.

Duplicates: a "duplicate" layer is a bit-exact copy of a valid layer. Of the identical copies, the one that comes
FIRST in the current layer order is the target (kind ``"valid"``), the later ones are kind ``"duplicate"``.
:meth:`SynthStack.reordered` re-establishes this rule after changing the order, so it holds for every
:class:`SynthStack` the augmentation returns.

Shapes: ``layers`` ``(N, 3, H, W)`` float32 in [0, 1], ``index`` ``(H, W)`` int64 in [0, N), ``aif`` ``(3, H, W)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from .._checks import check_shape
from ..errors import StackMFFError

__all__ = [
    "SynthStack",
    "disc_kernel",
    "synthesize_physical",
    "synthesize_upstream",
    "upstream_bins",
]


@dataclass
class SynthStack:
    """A synthetic focal stack with its ground truth.

    Attributes:
        layers: ``(N, 3, H, W)`` float32 in [0, 1].
        index: ``(H, W)`` int64, the layer that is in focus at each pixel (never an invalid layer).
        aif: ``(3, H, W)`` float32, the clean all-in-focus image (no noise, no breathing).
        focus: ``(N,)`` float32 focus disparity of each layer (upstream mode: the bin number; NaN for invalid layers).
        kinds: ``N`` labels, ``"valid"`` or one of :data:`stackmff.data.augment.INVALID_KINDS`.
        dup_of: ``(N,)`` int64, for a ``"duplicate"`` layer the position of the valid layer it copies, else -1.
        disparity: ``(H, W)`` float32 in [0, 1] (larger = nearer) when known, for depth-regression targets.
    """

    layers: np.ndarray
    index: np.ndarray
    aif: np.ndarray
    focus: np.ndarray
    kinds: tuple[str, ...] = ()
    dup_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    disparity: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.layers.shape[0]
        if not self.kinds:
            self.kinds = ("valid",) * n
        if self.dup_of.shape != (n,):
            self.dup_of = np.full(n, -1, np.int64)

    @property
    def n(self) -> int:
        return int(self.layers.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """``(N,)`` bool, true for layers that may be a target."""
        return np.array([k == "valid" for k in self.kinds], dtype=bool)

    def reordered(self, order: np.ndarray) -> SynthStack:
        """A new stack whose layer j is this stack's layer ``order[j]`` (``order`` is a permutation of ``0..N-1``).

        ``index``, ``focus``, ``kinds`` and ``dup_of`` follow the layers, and duplicates are re-canonicalised: the
        first of identical copies becomes the target.
        """
        inv = np.empty_like(order)
        inv[order] = np.arange(order.size)
        dup = self.dup_of[order]
        dup = np.where(dup >= 0, inv[np.maximum(dup, 0)], -1)
        out = replace(
            self,
            layers=self.layers[order],
            index=inv[self.index],
            focus=self.focus[order],
            kinds=tuple(self.kinds[i] for i in order),
            dup_of=dup.astype(np.int64),
        )
        return _canonical_duplicates(out)


def _canonical_duplicates(stack: SynthStack) -> SynthStack:
    """Make the first of each group of identical copies the valid target and the later ones ``"duplicate"``."""
    kinds = list(stack.kinds)
    dup_of = stack.dup_of.copy()
    index = stack.index
    focus = stack.focus.copy()
    roots = {int(dup_of[j]) for j in range(len(kinds)) if kinds[j] == "duplicate"}
    for root in roots:
        members = [root] + [j for j in range(len(kinds)) if kinds[j] == "duplicate" and dup_of[j] == root]
        first = min(members)
        if first != root:
            if index is stack.index:
                index = index.copy()
            index[index == root] = first
            kinds[first], kinds[root] = "valid", "duplicate"
            focus[first], focus[root] = focus[root], np.float32(np.nan)
        for j in members:
            dup_of[j] = -1 if j == first else first
    return replace(stack, kinds=tuple(kinds), dup_of=dup_of, index=index, focus=focus)


def _as_rng(rng: int | np.random.Generator | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _check_image(image: np.ndarray, name: str = "image") -> tuple[int, int]:
    check_shape(image, ["C", "H", "W"], name)
    if image.shape[0] != 3:
        raise StackMFFError(
            f"{name} must be an RGB (3, H, W) array, got {image.shape}; repeat grey images to 3 channels."
        )
    if not np.issubdtype(image.dtype, np.floating):
        raise StackMFFError(f"{name} must be float in [0, 1], got {image.dtype}; convert with stackmff.io.from_uint.")
    return int(image.shape[1]), int(image.shape[2])


def _check_layers(n_layers: int, lo: int = 1) -> None:
    if not isinstance(n_layers, (int, np.integer)) or n_layers < lo:
        raise StackMFFError(f"n_layers must be an integer >= {lo}, got {n_layers!r}.")


# --------------------------------------------------------------------------------------------------------------------
# upstream mode


def upstream_bins(depth_u8: np.ndarray, n_layers: int) -> np.ndarray:
    """Quantise an 8-bit depth map into ``n_layers`` equal bins over [0, 255]: ``floor(depth * N / 255)`` clipped
    to N - 1 (so 255 falls into the last bin). Returns ``(H, W)`` int64."""
    d = np.asarray(depth_u8).astype(np.int64)
    return np.minimum(d * n_layers // 255, n_layers - 1)


def synthesize_upstream(
    image: np.ndarray,
    depth_u8: np.ndarray,
    n_layers: int,
    *,
    rng: int | np.random.Generator | None = None,
    shuffle: bool = False,
) -> SynthStack:
    """Synthesise a stack exactly as the upstream StackMFF-V3 data script (``SPEC.md``).

    Args:
        image: ``(3, H, W)`` float all-in-focus image in [0, 1].
        depth_u8: ``(H, W)`` depth in 0..255 (uint8 or integers); which end is near does not matter here.
        n_layers: N >= 1.
        rng: random source, used only when ``shuffle``.
        shuffle: permute the layers once (upstream does this when it writes a dataset).

    Returns:
        :class:`SynthStack`; without ``shuffle`` layer k is focused on bin k and ``focus`` holds k.

    Examples:
        >>> img = np.random.default_rng(0).random((3, 8, 8), dtype=np.float32)
        >>> s = synthesize_upstream(img, np.arange(64, dtype=np.uint8).reshape(8, 8) * 4, 4)
        >>> s.layers.shape, s.index.dtype
        ((4, 3, 8, 8), dtype('int64'))
    """
    h, w = _check_image(image)
    check_shape(depth_u8, [h, w], "depth_u8")
    _check_layers(n_layers)
    depth = np.asarray(depth_u8)
    if depth.min() < 0 or depth.max() > 255:
        raise StackMFFError(f"depth_u8 must hold values in 0..255, got [{depth.min()}, {depth.max()}]; rescale it.")
    bins = upstream_bins(depth, n_layers)
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float32)
    # blur bank: entry t is the whole image blurred with ksize 2t+1 (t = |d - k| bin distance; t = 0 is the image)
    bank = np.empty((n_layers, h, w, 3), np.float32)
    bank[0] = hwc
    for t in range(1, n_layers):
        k = 2 * t + 1
        bank[t] = cv2.GaussianBlur(hwc, (k, k), 0)
    layers = np.empty((n_layers, h, w, 3), np.float32)
    flat = bank.reshape(n_layers, h * w, 3)
    for k in range(n_layers):
        dist = np.abs(bins - k).reshape(-1)
        layers[k] = flat[dist, np.arange(h * w)].reshape(h, w, 3)
    out = SynthStack(
        layers=np.ascontiguousarray(layers.transpose(0, 3, 1, 2)),
        index=bins,
        aif=image.astype(np.float32, copy=True),
        focus=np.arange(n_layers, dtype=np.float32),
        disparity=(depth.astype(np.float32) / 255.0),
    )
    return out.reordered(_as_rng(rng).permutation(n_layers)) if shuffle else out


# --------------------------------------------------------------------------------------------------------------------
# physical mode


@functools.lru_cache(maxsize=256)
def disc_kernel(radius: float) -> np.ndarray:
    """Anti-aliased disc PSF of the given radius in pixels, normalised to sum 1, float32 ``(2R+1, 2R+1)``.

    Pixel weights are ``clip(radius + 0.5 - distance, 0, 1)`` (a linear ramp over one pixel at the rim), so the kernel
    grows continuously with the radius and ``radius < 0.5`` gives the identity.
    """
    r = max(float(radius), 0.0)
    R = int(np.ceil(r + 0.5)) - 1 if r >= 0.5 else 0
    y, x = np.mgrid[-R : R + 1, -R : R + 1].astype(np.float32)
    k = np.clip(np.float32(r + 0.5) - np.hypot(x, y), 0.0, 1.0)
    k[R, R] = max(k[R, R], 1.0)
    k /= k.sum()
    k.setflags(write=False)
    return k


def _slab_edges(lo: float, hi: float, focus: np.ndarray, max_coc: float, coc_step: float) -> np.ndarray:
    """Disparity slab boundaries: uniform steps (CoC varies <= coc_step inside a slab) plus the midpoints between
    consecutive focus planes, so that every slab lies inside one focus "Voronoi cell" and its nearest focus plane is
    the GT of all its pixels."""
    n_uniform = max(1, int(np.ceil(max_coc * (hi - lo) / max(coc_step, 1e-3))))
    uniform = np.linspace(lo, hi, n_uniform + 1)[1:-1]
    f = np.sort(focus)
    mids = 0.5 * (f[1:] + f[:-1])
    mids = mids[(mids > lo) & (mids < hi)]
    inner = np.unique(np.concatenate([uniform, mids]))
    return np.concatenate([[-np.inf], inner, [np.inf]])


def _blur_rgba(src: np.ndarray, radius: float, fast: bool) -> np.ndarray:
    """Disc blur of a premultiplied RGBA slab crop (zero outside: with the final division by the accumulated alpha
    this is a normalised convolution, so the borders neither darken nor mirror content).

    With ``fast``, radii >= 4 px are applied at 1/2 or 1/4 resolution: the result is smooth at that scale, so the
    error is far below the blur itself while the cost drops 4-16x (this is what makes 1 MP stacks affordable).
    """
    kernel = disc_kernel(radius)
    if kernel.shape[0] == 1:
        return src
    f = 1 if not fast or radius < 4 else (2 if radius < 10 else 4)
    h, w = src.shape[:2]
    if f == 1 or min(h, w) < 4 * f:
        return cv2.filter2D(src, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    ph, pw = -h % f, -w % f
    if ph or pw:
        src = np.pad(src, ((0, ph), (0, pw), (0, 0)))
    small = cv2.resize(src, ((w + pw) // f, (h + ph) // f), interpolation=cv2.INTER_AREA)
    small = cv2.filter2D(small, -1, disc_kernel(radius / f), borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)[:h, :w]


def _magnify(img: np.ndarray, scale: float) -> np.ndarray:
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), 0.0, float(scale))
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def synthesize_physical(
    image: np.ndarray,
    disparity: np.ndarray,
    n_layers: int,
    *,
    rng: int | np.random.Generator | None = None,
    max_coc: float = 8.0,
    noise: tuple[float, float] = (1e-4, 2e-3),
    breathing: float = 0.0,
    exposure_jitter: float = 0.0,
    focus: Sequence[float] | np.ndarray | None = None,
    coc_step: float = 0.5,
    max_slabs: int = 48,
    fast_blur: bool = True,
) -> SynthStack:
    """Synthesise a focal stack with a thin-lens defocus model and layered, occlusion-aware compositing.

    Layer k is focused at disparity ``focus[k]`` (sorted ascending: far to near). A point at disparity d is imaged
    as a disc of radius ``max_coc * |d - focus[k]|`` pixels. The scene is cut into depth slabs (thin enough that the
    CoC varies by at most ``coc_step`` inside one, and never straddling the midpoint between two focus planes); for
    each layer the slabs are blurred with their own disc together with their alpha mask and composited back to
    front (premultiplied "over"), then normalised by the accumulated alpha. Noise: ``x + sqrt(a*x + b^2) * n``,
    ``n ~ N(0, 1)``, with ``(a, b) = noise``.

    Args:
        image: ``(3, H, W)`` float all-in-focus image in [0, 1].
        disparity: ``(H, W)`` float disparity in [0, 1], larger = nearer.
        n_layers: N >= 1 (ignored when ``focus`` is given).
        rng: random source (seed or Generator) for the focus positions, noise, breathing and exposure.
        max_coc: CoC radius in pixels for a disparity difference of 1 (the whole [0, 1] range).
        noise: Poisson gain ``a`` and Gaussian read-noise std ``b`` (both 0 = noise-free).
        breathing: relative magnification change from the farthest to the nearest focus plane (e.g. 0.02 = 2 %);
            layers are scaled about the image centre; ``index`` and ``aif`` stay in the unscaled frame.
        exposure_jitter: per-layer gain ``exp(u)``, ``u ~ U(-exposure_jitter, exposure_jitter)``.
        focus: explicit focus disparities; default: N planes spread evenly over the scene's disparity range with a
            random jitter of up to a third of the spacing.
        coc_step: CoC resolution of the slab decomposition in pixels.
        max_slabs: cap on the uniform slabs (large ``max_coc`` then gets coarser CoC steps, relatively still fine).
        fast_blur: blur radii >= 4 px at reduced resolution (see ``_blur_rgba``); False = exact full-size discs.

    Returns:
        :class:`SynthStack` with layers ordered by focus (far to near), ``index`` = nearest focus plane.

    Examples:
        >>> g = np.random.default_rng(0)
        >>> s = synthesize_physical(g.random((3, 32, 32), dtype=np.float32), g.random((32, 32), dtype=np.float32), 5, rng=0)
        >>> s.layers.shape, s.index.shape, s.focus.shape
        ((5, 3, 32, 32), (32, 32), (5,))
    """
    h, w = _check_image(image)
    check_shape(disparity, [h, w], "disparity")
    rng = _as_rng(rng)
    disp = np.asarray(disparity, dtype=np.float32)
    lo, hi = float(disp.min()), float(disp.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise StackMFFError("disparity contains NaN or inf; fill holes before synthesising.")
    if max_coc < 0 or coc_step <= 0:
        raise StackMFFError(f"max_coc must be >= 0 and coc_step > 0, got {max_coc} and {coc_step}.")
    if focus is None:
        _check_layers(n_layers)
        spacing = (hi - lo) / n_layers
        f = lo + spacing * (np.arange(n_layers) + 0.5 + rng.uniform(-1 / 3, 1 / 3, n_layers))
    else:
        f = np.asarray(focus, dtype=np.float64).reshape(-1)
        if f.size < 1 or not np.all(np.isfinite(f)):
            raise StackMFFError(f"focus must be a non-empty list of finite disparities, got {focus!r}.")
    f = np.sort(f)
    n = int(f.size)

    # GT: nearest focus plane (ties -> the farther one, np.argmin keeps the first)
    index = np.argmin(np.abs(disp[None] - f[:, None, None].astype(np.float32)), axis=0).astype(np.int64)

    step = max(coc_step, max_coc * (hi - lo) / max(max_slabs, 1))
    edges = _slab_edges(lo, hi, f, max_coc, step)
    slab_of = (np.searchsorted(edges, disp, side="right") - 1).reshape(-1)  # slab id per pixel, far first
    hwc = np.ascontiguousarray(image.transpose(1, 2, 0), dtype=np.float32)
    flat_rgb = hwc.reshape(-1, 3)
    flat_disp = disp.reshape(-1)
    order = np.argsort(slab_of, kind="stable")  # one pass groups the pixels of every slab
    _, starts = np.unique(slab_of[order], return_index=True)
    slabs = []
    for pix in np.split(order, starts[1:]):
        ys, xs = np.divmod(pix, w)
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        rgba = np.zeros((y1 - y0, x1 - x0, 4), np.float32)  # premultiplied colour + alpha
        rgba[ys - y0, xs - x0, :3] = flat_rgb[pix]
        rgba[ys - y0, xs - x0, 3] = 1.0
        slabs.append((float(flat_disp[pix].mean()), (y0, y1, x0, x1), rgba, pix))

    layers = np.empty((n, h, w, 3), np.float32)
    for k in range(n):
        acc = np.zeros((h, w, 4), np.float32)
        flat_acc = acc.reshape(-1, 4)
        for centre, (y0, y1, x0, x1), rgba, pix in slabs:  # far -> near
            r = max_coc * abs(centre - f[k])
            r = round(r / (step / 2)) * (step / 2)  # quantised radius: bounded kernel cache
            pad = disc_kernel(r).shape[0] // 2
            if not pad:  # sharp slab: opaque exactly on its own pixels, "over" is a plain copy there
                flat_acc[pix, :3] = flat_rgb[pix]
                flat_acc[pix, 3] = 1.0
                continue
            Y0, Y1, X0, X1 = max(0, y0 - pad), min(h, y1 + pad), max(0, x0 - pad), min(w, x1 + pad)
            src = np.zeros((Y1 - Y0, X1 - X0, 4), np.float32)
            src[y0 - Y0 : y1 - Y0, x0 - X0 : x1 - X0] = rgba
            src = _blur_rgba(src, r, fast_blur)
            roi = acc[Y0:Y1, X0:X1]
            roi *= 1.0 - src[..., 3:4]
            roi += src
        a = acc[..., 3:4]
        layers[k] = np.where(a > 1e-6, acc[..., :3] / np.maximum(a, 1e-6), hwc)

    if breathing:
        mid = 0.5 * (lo + hi)
        span = max(hi - lo, 1e-6)
        for k in range(n):
            layers[k] = _magnify(layers[k], 1.0 + breathing * (f[k] - mid) / span)
    if exposure_jitter:
        gains = np.exp(rng.uniform(-exposure_jitter, exposure_jitter, n)).astype(np.float32)
        layers *= gains[:, None, None, None]
    a_shot, b_read = float(noise[0]), float(noise[1])
    if a_shot > 0 or b_read > 0:
        np.clip(layers, 0.0, 1.0, out=layers)
        sigma = np.sqrt(a_shot * layers + b_read * b_read)
        layers += sigma * rng.standard_normal(layers.shape, dtype=np.float32)
    np.clip(layers, 0.0, 1.0, out=layers)
    return SynthStack(
        layers=np.ascontiguousarray(layers.transpose(0, 3, 1, 2)),
        index=index,
        aif=image.astype(np.float32, copy=True),
        focus=f.astype(np.float32),
        disparity=disp.copy(),
    )
