"""Fusion methods ``stackmff_v3`` and ``stackmff_v3_star`` (learned) for the fusion registry.

Options (all keyword-only, also reachable from the CLI with ``-O KEY=VALUE``): ``weights`` (checkpoint path, default
the shipped weights), ``device`` ("auto", "cpu", "cuda", "cuda:1"...), ``memory_budget_mb``, ``tile``, ``overlap``,
``precision`` ("auto", "fp32", "bf16"), ``reject_outliers`` (drop exposure-shifted, blank and much noisier layers
before the network, default true; see :func:`~stackmff.models.inference.outlier_layers`), ``gather`` ("pyramid":
Laplacian-pyramid blend steered by the probabilities, the default and the best PSNR/SSIM, see
:func:`~stackmff.models.inference.pyramid_blend`; "hard": exact source values of the most probable layer, for 16-bit
scientific data that must not be resampled; "soft": probability-weighted mean; upstream's own code outputs "hard"), ``half_res``
(cross-layer stage at half resolution, default true: ~2x less network time on CPU for -0.04 dB; false = the network
exactly as trained), ``preset`` ("default", or "upstream": the author's inference step by step, see
:func:`~stackmff.models.inference.fuse_stack_upstream`; the other options except weights/device are then ignored).

``weights`` may also be the author's upstream ``.pth`` (``stackmffv3.pth``, ``stackmffv3_star.pth``): V3 and V3-star
files have the same keys, so the method says which head to use (``stackmff_v3`` = argmax, ``stackmff_v3_star`` =
upstream's normalised expected layer).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .._checks import StackMFFError, check_stack
from ..fusion.registry import FusionResult, register_method
from .inference import (
    DEFAULT_STAR_WEIGHTS,
    DEFAULT_WEIGHTS,
    PRESETS,
    fuse_stack_upstream,
    fuse_stack_v3,
    load_model,
    resolve_device,
)

__all__ = ["fuse_stackmff_v3", "fuse_stackmff_v3_star", "needs_weights"]


def needs_weights(method: str) -> bool:
    """True when ``method`` is a learned method whose shipped weights are missing (it then needs ``--weights``)."""
    default = {"stackmff_v3": DEFAULT_WEIGHTS, "stackmff_v3_star": DEFAULT_STAR_WEIGHTS}.get(method)
    return default is not None and not default.is_file()


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, device: str, mtime_ns: int, head: str):  # mtime: a rewritten checkpoint is reloaded
    return load_model(path, device=device, head=head)


def _run(
    stack: np.ndarray,
    default: Path,
    *,
    weights: str | Path | None,
    device: str | None,
    memory_budget_mb: float,
    tile: int | None,
    overlap: int | None,
    precision: str,
    reject_outliers: bool,
    gather: str = "pyramid",
    half_res: bool = False,
    preset: str = "default",
    head: str = "classify",
) -> FusionResult:
    check_stack(stack)
    if preset not in PRESETS:
        raise StackMFFError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    dev = resolve_device(device)
    path = Path(weights) if weights is not None else default
    if path.is_dir():
        path = path / "model.pt"
    mtime = path.stat().st_mtime_ns if path.is_file() else 0  # a missing file fails in load_model with a hint
    model = _cached_model(str(path.resolve()), str(dev), mtime, head)
    if model.cfg.head != head:
        want, other = ("V3", "stackmff_v3_star") if head == "classify" else ("V3-star", "stackmff_v3")
        raise StackMFFError(f"weights {path} are not {want} weights; use -m {other} for them")
    if preset == "upstream":
        res = fuse_stack_upstream(stack, model)
        res.extras["weights"] = str(path)
        return res
    res = fuse_stack_v3(
        stack,
        model,
        memory_budget_mb=memory_budget_mb,
        tile=tile,
        overlap=overlap,
        precision=precision,
        reject_outliers=reject_outliers,
        gather=gather,
        half_res=half_res,
    )
    res.extras["weights"] = str(path)
    return res


@register_method(
    "stackmff_v3", "StackMFF V3 network: per-pixel layer probabilities steer a pyramid blend", learned=True
)
def fuse_stackmff_v3(
    stack: np.ndarray,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    memory_budget_mb: float = 1024,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    reject_outliers: bool = True,
    gather: str = "pyramid",
    half_res: bool = True,
    preset: str = "default",
) -> FusionResult:
    """Fuse a ``(N, C, H, W)`` stack in [0, 1] with StackMFF V3 (any N >= 2, any layer order).

    Returns:
        FusionResult: image ``(C, H, W)``, index map ``(H, W)``, confidence ``(H, W)`` (max softmax probability).
    """
    return _run(
        stack,
        DEFAULT_WEIGHTS,
        weights=weights,
        device=device,
        memory_budget_mb=memory_budget_mb,
        tile=tile,
        overlap=overlap,
        precision=precision,
        reject_outliers=reject_outliers,
        gather=gather,
        half_res=half_res,
        preset=preset,
    )


@register_method(
    "stackmff_v3_star",
    "StackMFF V3-star: soft depth regression; layers must be in focus order",
    learned=True,
    ordered=True,
)
def fuse_stackmff_v3_star(
    stack: np.ndarray,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    memory_budget_mb: float = 1024,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    reject_outliers: bool = True,
    preset: str = "default",
) -> FusionResult:
    """Fuse a focus-ordered ``(N, C, H, W)`` stack with V3-star (a checkpoint with ``head="regress"``, or the
    author's ``stackmffv3_star.pth``): upstream's head, the expected layer min-max normalised over the image."""
    return _run(
        stack,
        DEFAULT_STAR_WEIGHTS,
        weights=weights,
        device=device,
        memory_budget_mb=memory_budget_mb,
        tile=tile,
        overlap=overlap,
        precision=precision,
        reject_outliers=reject_outliers,
        gather="hard",
        preset=preset,
        head="regress",
    )
