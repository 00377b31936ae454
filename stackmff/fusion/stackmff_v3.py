"""Fusion methods ``stackmff_v3`` and ``stackmff_v3_star`` (learned) for the fusion registry.

Options (all keyword-only, also reachable from the CLI with ``-O KEY=VALUE``): ``weights`` (checkpoint path, default the
shipped weights), ``device`` ("auto", "cpu", "cuda", "cuda:1"...), ``memory_budget_mb``, ``tile``, ``overlap``,
``precision`` ("auto", "fp32", "bf16"), ``reject_outliers`` (drop exposure-shifted, blank and much noisier layers before
the network, default true; see :func:`~stackmff.fusion.outliers.outlier_layers`), ``gather`` ("pyramid":
Laplacian-pyramid blend steered by the probabilities, the default and the best PSNR/SSIM, see
:func:`~stackmff.fusion.pyramid_blend.pyramid_blend`; "hard": exact source values of the most probable layer, for 16-bit
scientific data that must not be resampled; "soft": probability-weighted mean; upstream's own code outputs "hard"),
``half_res`` (cross-layer stage at half resolution, default true: ~2x less network time on CPU for -0.04 dB; false = the
network exactly as trained), ``threads`` (torch threads: default the cores no other process is busy on,
:func:`stackmff._cpu.choose_threads`, at most ``torch.get_num_threads()``, measured again between tiles at most every
5 s so a long run follows the free cores (:class:`stackmff._cpu.ThreadGovernor`; the counts it went through are in
``extras["thread_counts"]``); set for the call and restored after it),
``top_k`` (the pyramid blend uses only each pixel's top_k most probable layers; default all: ``4`` sharpens long unsure
hand-held stacks but costs up to ~1 dB on registered stacks of many layers), ``preset`` ("default", or "upstream": the
author's inference step by step, see :func:`~stackmff.fusion.learned.fuse_stack_upstream`; the other options except
weights/device are then ignored).

Besides the fusion, ``extras`` says where it ran: ``device`` ("cpu", "cuda:0"), ``threads``, and on CUDA
``gpu_peak_mb``, the most GPU memory torch's caching allocator held during the call (``stackmff fuse --json`` reports
them; the benchmark grid reads the GPU figure from there).

``weights`` may also be the author's upstream ``.pth`` (``stackmffv3.pth``, ``stackmffv3_star.pth``): V3 and V3-star
files have the same keys, so the method says which head to use (``stackmff_v3`` = argmax, ``stackmff_v3_star`` =
upstream's normalised expected layer).
"""

from __future__ import annotations

import functools
from pathlib import Path

import cv2
import numpy as np

from .._checks import check_choice, check_stack
from .._cpu import ThreadGovernor, available_cores, choose_threads, passive_openmp
from ..errors import StackMFFError
from ..models._weights import DEFAULT_STAR_WEIGHTS, DEFAULT_WEIGHTS  # torch-free
from .registry import FusionResult, register_method

# torch (via .learned and stackmff.models) is imported when a learned method runs, not when the registry lists the
# methods: `stackmff methods`, `--help` and the classical methods start in a fraction of the time and memory
# (tests/test_startup.py).

__all__ = ["fuse_stackmff_v3", "fuse_stackmff_v3_star", "needs_weights"]


def needs_weights(method: str) -> bool:
    """True when ``method`` is a learned method whose shipped weights are missing (it then needs ``--weights``)."""
    default = {"stackmff_v3": DEFAULT_WEIGHTS, "stackmff_v3_star": DEFAULT_STAR_WEIGHTS}.get(method)
    return default is not None and not default.is_file()


@functools.lru_cache(maxsize=4)
def _cached_model(path: str, device: str, mtime_ns: int, head: str):  # mtime: a rewritten checkpoint is reloaded
    """The checkpoint ready for inference (BatchNorm folded), made once per process: folding a copy took ~0.1 s per
    stack (11 % of a 10 x 0.25 MP fusion in ``fuse-dataset`` or a flow); the model just loaded is folded in place."""
    from ..models.checkpoint import load_model
    from ..models.inference import inference_copy

    return inference_copy(load_model(path, device=device, head=head), inplace=True)


def _model(weights: str | Path | None, default: Path, device: str | None, head: str):
    """``(model, path)``: the checkpoint ``weights`` (file or training folder) or ``default``, with the ``head``
    the method needs (a V3 file given to V3-star or the other way round fails in one line)."""
    from ..models.device import resolve_device

    dev = resolve_device(device)
    path = Path(weights) if weights is not None else default
    if path.is_dir():
        path = path / "model.pt"
    mtime = path.stat().st_mtime_ns if path.is_file() else 0  # a missing file fails in load_model with a hint
    model = _cached_model(str(path.resolve()), str(dev), mtime, head)
    if model.cfg.head != head:
        want, other = ("V3", "stackmff_v3_star") if head == "classify" else ("V3-star", "stackmff_v3")
        raise StackMFFError(f"weights {path} are not {want} weights; use -m {other} for them")
    return model, path


def _checker(default: Path, head: str):
    """The registry's ``check`` hook: device, weights (loaded now, into the cache the fusion then uses), budget,
    tile, precision, gather, preset and threads are checked before the stack is loaded and aligned."""

    def check(opts: dict) -> None:
        from .learned import GATHERS, PRESETS

        budget = opts.get("memory_budget_mb")
        if budget is not None and budget < 64:
            raise StackMFFError(f"memory budget must be >= 64 MB, got {budget}; e.g. 1024")
        top_k = opts.get("top_k")
        if top_k is not None and top_k < 1:
            raise StackMFFError(f"top_k must be >= 1 (or left out for every layer), got {top_k}; e.g. top_k=4")
        tile = opts.get("tile")
        if tile is not None and (tile < 32 or tile % 32):
            raise StackMFFError(f"tile must be a positive multiple of 32, got {tile}; e.g. tile=512")
        threads = opts.get("threads")
        if threads not in (None, "auto") and (not isinstance(threads, int) or threads < 0):
            raise StackMFFError(f"threads must be a whole number >= 1 (0 or auto: choose), got {threads!r}")
        check_choice(opts.get("precision", "auto"), ("auto", "fp32", "bf16"), "option precision")
        check_choice(opts.get("gather", "pyramid"), GATHERS, "option gather")
        check_choice(opts.get("preset", "default"), PRESETS, "option preset")
        _model(opts.get("weights"), default, opts.get("device"), head)  # a missing, corrupt or wrong file fails now

    return check


def _run(
    stack: np.ndarray,
    default: Path,
    *,
    weights: str | Path | None,
    device: str | None,
    memory_budget_mb: float | None,
    tile: int | None,
    overlap: int | None,
    precision: str,
    reject_outliers: bool,
    gather: str = "pyramid",
    half_res: bool = False,
    threads: int | str | None = None,
    preset: str = "default",
    head: str = "classify",
    top_k: int | None = None,
) -> FusionResult:
    auto = threads in (None, 0, "auto")
    n_threads = choose_threads(None if auto else threads)
    if n_threads < available_cores():
        passive_openmp()  # some cores are busy: idle threads sleep instead of spinning (before torch loads OpenMP)

    import torch

    from . import learned  # torch: only now that a learned method runs

    check_stack(stack)
    if preset not in learned.PRESETS:
        raise StackMFFError(f"preset must be one of {', '.join(learned.PRESETS)}, got {preset!r}")
    before = torch.get_num_threads()
    if auto:  # never more than torch is set to: a caller's torch.set_num_threads(1) holds
        n_threads = min(before, n_threads)
    model, path = _model(weights, default, device, head)
    if next(model.parameters()).device.type == "cpu":
        from ..models.device import drop_gpu_library_pages

        drop_gpu_library_pages()  # the CUDA build's libraries: ~140 MB resident that a CPU run never executes
    cv_before = cv2.getNumThreads()

    def set_threads(k: int) -> None:
        torch.set_num_threads(k)  # process-wide: restored below
        cv2.setNumThreads(k)  # OpenCV's pool (outlier checks, pyramid blend) waits for busy cores the same way

    set_threads(n_threads)
    # automatic count on CPU: measured again between tiles, so a long fusion follows the cores other jobs free or take
    dev = next(model.parameters()).device
    cpu = dev.type == "cpu"
    governor = ThreadGovernor(n_threads, before, set_threads) if auto and cpu else None
    if not cpu:
        torch.cuda.reset_peak_memory_stats(dev)  # the GPU memory of this fusion alone, reported below
    try:
        if preset == "upstream":
            res = learned.fuse_stack_upstream(stack, model)
        else:
            res = learned.fuse_stack_v3(
                stack,
                model,
                memory_budget_mb=memory_budget_mb,
                tile=tile,
                overlap=overlap,
                precision=precision,
                reject_outliers=reject_outliers,
                gather=gather,
                half_res=half_res,
                top_k=top_k,
                between_tiles=None if governor is None else governor.update,
            )
    finally:
        torch.set_num_threads(before)
        cv2.setNumThreads(cv_before)
    res.extras["weights"] = str(path)
    res.extras["device"] = str(dev)
    res.extras["threads"] = n_threads
    if not cpu:  # what the caching allocator held at its peak (the tensors' own peak is a little lower)
        res.extras["gpu_peak_mb"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
    if governor is not None and len(governor.counts) > 1:
        res.extras["thread_counts"] = governor.counts  # the counts it followed, in order
    return res


@register_method(
    "stackmff_v3",
    "StackMFF V3 network: per-pixel layer probabilities steer a pyramid blend",
    learned=True,
    check=_checker(DEFAULT_WEIGHTS, "classify"),
)
def fuse_stackmff_v3(
    stack: np.ndarray,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    memory_budget_mb: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    reject_outliers: bool = True,
    gather: str = "pyramid",
    half_res: bool = True,
    threads: int | str | None = None,
    preset: str = "default",
    top_k: int | None = None,
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
        threads=threads,
        preset=preset,
        top_k=top_k,
    )


@register_method(
    "stackmff_v3_star",
    "StackMFF V3-star: soft depth regression; layers must be in focus order",
    learned=True,
    ordered=True,
    check=_checker(DEFAULT_STAR_WEIGHTS, "regress"),
)
def fuse_stackmff_v3_star(
    stack: np.ndarray,
    *,
    weights: str | Path | None = None,
    device: str | None = None,
    memory_budget_mb: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    precision: str = "auto",
    reject_outliers: bool = True,
    threads: int | str | None = None,
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
        threads=threads,
        preset=preset,
        head="regress",
    )
