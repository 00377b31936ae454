"""Input validation and conversion shared by every metric.

Every public metric accepts numpy arrays or torch tensors shaped ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``
(C = 1 or 3, RGB order) with values in ``[0, data_range]`` (``data_range=1.0`` for float images in [0, 1],
``255`` for 8-bit and ``65535`` for 16-bit data). Source stacks have one more axis, the source (focal slice) axis
``N``, just before ``C``: ``(N, H, W)``, ``(N, C, H, W)`` or ``(B, N, C, H, W)``; a list of images shaped like the
fused image is accepted too.

Inputs are converted once to torch tensors scaled to [0, 1] (:class:`Prepared`); results go back in the caller's
kind: a Python ``float`` for one image given as numpy, a numpy ``(B,)`` array for a numpy batch, and a torch
tensor (0-d or ``(B,)``, of the input's float dtype) for torch input.

Problems raise ``TypeError`` (wrong type) or ``ValueError`` (shape, range, option) with a one-line message
"<arg> must be <expectation>, got <actual>; <hint>."; :mod:`metrics.evaluate` turns them into
:class:`stackmff.errors.StackMFFError` for the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "Prepared",
    "check_min_size",
    "check_option",
    "finish",
    "prepare",
    "prepare_fused_gray",
    "prepare_fusion",
    "prepare_pair",
    "prepare_reference",
    "prepare_sources",
    "quantize8",
]

ArrayLike = np.ndarray | torch.Tensor


@dataclass
class Prepared:
    """A validated input.

    Attributes:
        t: ``(B, C, H, W)`` (or ``(B, N, C, H, W)`` for sources) float tensor scaled to [0, 1]; float64 unless the
            input was a float32/float16 torch tensor, whose dtype is kept for the piq metrics.
        batched: whether the caller passed a leading batch axis.
        is_torch: whether the caller passed a torch tensor (results are returned as tensors then).
        out_dtype: float dtype of torch results.
        ndim: number of axes of the caller's input (2, 3 or 4).
    """

    t: torch.Tensor
    batched: bool
    is_torch: bool
    out_dtype: torch.dtype
    ndim: int = 4


def _to_tensor(x: object, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        t, is_torch = x.detach(), True
    elif isinstance(x, np.ndarray):
        if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise TypeError(f"{name} must be a numeric array, got dtype {x.dtype}.")
        # uint16/uint32 have no torch equivalent on every version: widen first (exact for 16-bit data)
        arr = x.astype(np.float64) if x.dtype.kind in "ub" else x
        t, is_torch = torch.from_numpy(np.ascontiguousarray(arr)), False
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}.")
    if t.is_complex():
        raise TypeError(f"{name} must be real-valued, got {t.dtype}.")
    return t, is_torch


def _scale(t: torch.Tensor, name: str, data_range: float) -> torch.Tensor:
    if not isinstance(data_range, (int, float)) or isinstance(data_range, bool) or not data_range > 0:
        raise ValueError(
            f"data_range must be a positive number, got {data_range!r}; use 1.0 for float images, 255 for 8-bit."
        )
    work_dtype = t.dtype if t.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) else torch.float64
    if work_dtype in (torch.float16, torch.bfloat16):
        work_dtype = torch.float32
    t = t.to(work_dtype)
    if t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}.")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must contain only finite values, got NaN or inf; check the image decoding.")
    lo, hi = float(t.min()), float(t.max())
    tol = 1e-6 * data_range
    if lo < -tol or hi > data_range + tol:
        hint = " pass data_range=255 for 8-bit or 65535 for 16-bit images" if hi > data_range + tol else " clip first"
        raise ValueError(f"{name} values must lie in [0, {data_range:g}], got [{lo:.4g}, {hi:.4g}];{hint}.")
    t = t.clamp(0.0, float(data_range)) if (lo < 0 or hi > data_range) else t
    return t / float(data_range) if data_range != 1 else t


def _check_channels(shape: tuple[int, ...], name: str) -> None:
    c, h, w = shape[-3:]
    if c not in (1, 3):
        raise ValueError(
            f"{name} must have 1 or 3 channels on axis -3, got shape {shape}; images are channels-first (C, H, W)."
        )
    if h < 2 or w < 2:
        raise ValueError(f"{name} must be at least 2x2 pixels, got {h}x{w}.")


def prepare(x: object, name: str = "fused", *, data_range: float = 1.0) -> Prepared:
    """Validate one image or a batch and return it as ``(B, C, H, W)`` scaled to [0, 1].

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` numpy array or torch tensor.
        name: argument name used in error messages.
        data_range: value of white (1.0 for floats in [0, 1], 255 for 8-bit).

    Raises:
        TypeError: ``x`` is not a real numeric array/tensor.
        ValueError: wrong number of dimensions or channels, non-finite values or values outside [0, data_range].
    """
    t, is_torch = _to_tensor(x, name)
    out_dtype = t.dtype if (is_torch and t.is_floating_point()) else torch.float32
    ndim = t.ndim
    if t.ndim == 2:
        t, batched = t[None, None], False
    elif t.ndim == 3:
        t, batched = t[None], False
    elif t.ndim == 4:
        batched = True
    else:
        raise ValueError(f"{name} must have shape (H, W), (C, H, W) or (B, C, H, W), got {tuple(t.shape)}.")
    _check_channels(tuple(t.shape), name)
    return Prepared(_scale(t, name, data_range), batched, is_torch, out_dtype, ndim)


def prepare_pair(x: object, y: object, names: tuple[str, str] = ("fused", "reference"), *, data_range: float = 1.0):
    """Validate two images/batches of identical shape; returns two :class:`Prepared`.

    Raises:
        ValueError: the shapes differ (both shapes are printed), plus everything :func:`prepare` raises.
    """
    px = prepare(x, names[0], data_range=data_range)
    py = prepare(y, names[1], data_range=data_range)
    if px.t.shape != py.t.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {tuple(np.shape(x))} and {tuple(np.shape(y))}; "
            "resize or register the images first."
        )
    if px.t.dtype != py.t.dtype:
        dt = torch.promote_types(px.t.dtype, py.t.dtype)
        px.t, py.t = px.t.to(dt), py.t.to(dt)
    return px, py


def prepare_sources(
    sources: object,
    fused: Prepared,
    name: str = "sources",
    *,
    data_range: float = 1.0,
    n_sources: int | None = None,
) -> torch.Tensor:
    """Validate the source images of a fusion and return them as ``(B, N, C, H, W)`` scaled to [0, 1].

    Args:
        sources: an array/tensor with one more axis than the fused input (the source axis N just before C) or a
            list/tuple of N images each shaped like the fused input.
        fused: the prepared fused image(s); sources must match its batch, channel and spatial sizes.
        name: argument name used in error messages.
        data_range: value of white.
        n_sources: if given, the exact number of sources required.

    Raises:
        TypeError: wrong type.
        ValueError: wrong shape, N < 1 (or N != n_sources), values outside [0, data_range].
    """
    b, c, h, w = fused.t.shape
    if isinstance(sources, (list, tuple)):
        if not sources:
            raise ValueError(f"{name} must hold at least one image, got an empty {type(sources).__name__}.")
        preps = [prepare(s, f"{name}[{i}]", data_range=data_range) for i, s in enumerate(sources)]
        for i, p in enumerate(preps):
            if p.t.shape != fused.t.shape:
                raise ValueError(
                    f"{name}[{i}] must have the fused image's shape {tuple(fused.t.shape)}, got {tuple(p.t.shape)}; "
                    "register or crop the sources to the fused image."
                )
        s = torch.stack([p.t.to(fused.t.dtype) for p in preps], dim=1)  # (B, N, C, H, W)
    else:
        t, _ = _to_tensor(sources, name)
        fused_ndim = fused.ndim
        if t.ndim != fused_ndim + 1:
            raise ValueError(
                f"{name} must have one more axis than the fused image (the source axis N before C), got shape "
                f"{tuple(t.shape)} for a fused image of {fused_ndim} axes; stack the sources along a new axis."
            )
        if not fused.batched:
            t = t[None]  # (1, N, ...)
        if t.ndim == 4:
            t = t[:, :, None]  # (B, N, 1, H, W)
        if tuple(t.shape[:1]) + tuple(t.shape[2:]) != (b, c, h, w):
            raise ValueError(
                f"{name} must have shape (B, N, C, H, W) = ({b}, N, {c}, {h}, {w}) like the fused image, got "
                f"{tuple(t.shape)}; register or crop the sources to the fused image."
            )
        s = _scale(t, name, data_range).to(fused.t.dtype)
    if s.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one source image, got N=0.")
    if n_sources is not None and s.shape[1] != n_sources:
        raise ValueError(f"{name} must hold exactly {n_sources} images for this metric, got N={s.shape[1]}.")
    return s


def check_min_size(p: Prepared, min_size: int, metric: str) -> None:
    """Raise ``ValueError`` unless both spatial sizes are at least ``min_size``."""
    h, w = p.t.shape[-2:]
    if min(h, w) < min_size:
        raise ValueError(f"{metric} needs images of at least {min_size}x{min_size} pixels, got {h}x{w}.")


def check_option(value: object, choices: Sequence[object], name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}.")


def finish(values: torch.Tensor, like: Prepared) -> float | np.ndarray | torch.Tensor:
    """Return per-image values ``(B,)`` in the caller's kind (see the module docstring)."""
    values = values.detach().reshape(-1)
    if like.is_torch:
        v = values.to(like.out_dtype)
        return v if like.batched else v[0]
    arr = values.to(torch.float64).cpu().numpy()
    return arr if like.batched else float(arr[0])


def prepare_reference(fused: object, reference: object, *, data_range: float, color: str):
    """:func:`prepare_pair` plus the ``color`` option of the full-reference metrics.

    Args:
        fused: fused image(s), see :func:`prepare`.
        reference: ground-truth image(s) of the same shape.
        data_range: value of white.
        color: ``"rgb"`` keeps the channels, ``"gray"`` converts both to Rec.601 luma first.

    Returns:
        ``(fused, reference)`` :class:`Prepared`, tensors ``(B, C, H, W)`` in [0, 1] (C = 1 for ``"gray"``).
    """
    from .functional.color import rgb_to_gray

    check_option(color, ("rgb", "gray"), "color")
    px, py = prepare_pair(fused, reference, ("fused", "reference"), data_range=data_range)
    if color == "gray":
        px.t, py.t = rgb_to_gray(px.t), rgb_to_gray(py.t)
    return px, py


def prepare_fused_gray(fused: object, *, data_range: float) -> tuple[Prepared, torch.Tensor]:
    """Validate fused image(s) for the no-reference fusion metrics.

    Returns:
        the :class:`Prepared` input and its Rec.601 luma ``(B, 1, H, W)`` float64 on the 0-255 scale (the scale the
        fusion literature reports SF, AG, SD and entropy on).
    """
    from .functional.color import rgb_to_gray

    p = prepare(fused, "fused", data_range=data_range)
    return p, rgb_to_gray(p.t.to(torch.float64)) * 255.0


def prepare_fusion(
    fused: object, sources: object, *, data_range: float, n_sources: int | None = None
) -> tuple[Prepared, torch.Tensor, torch.Tensor]:
    """Validate a fused image and its sources for the fusion metrics.

    Returns:
        the :class:`Prepared` fused input, its luma ``(B, 1, H, W)`` and the sources' luma ``(B, N, 1, H, W)``,
        both float64 on the 0-255 scale.
    """
    from .functional.color import rgb_to_gray

    p, f = prepare_fused_gray(fused, data_range=data_range)
    s = prepare_sources(sources, p, data_range=data_range, n_sources=n_sources)
    # one source at a time: no float64 copy of the whole colour stack
    gray = torch.empty((s.shape[0], s.shape[1], 1, *s.shape[-2:]), dtype=torch.float64, device=s.device)
    for i in range(s.shape[1]):
        gray[:, i] = rgb_to_gray(s[:, i].to(torch.float64)) * 255.0
    return p, f, gray


def quantize8(gray255: torch.Tensor) -> torch.Tensor:
    """Round 0-255 luma to integer levels 0..255 (int64), the 256 histogram bins of entropy and MI."""
    return gray255.round().clamp(0, 255).to(torch.int64)
