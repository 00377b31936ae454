"""The entry point :func:`align_stack`: check the arguments, estimate the transforms (or read them), warp the layers."""

from __future__ import annotations

import os
import time

import numpy as np

from .._checks import check_choice, check_stack
from ..errors import StackMFFError
from .ecc import _COARSEST
from .estimate import _Estimate, _estimate, _identity, _Limits
from .result import AlignResult
from .transforms import ALIGN_MODES
from .transforms_file import _estimate_from, _validate_transforms, _write_transforms, load_transforms
from .warp import FRAMES, _warp_layers, _Warped

__all__ = ["align_stack"]


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
        >>> import cv2
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
        est = _given_transforms(transforms, n=n, c=c, size=(h, w))
        reference = est.reference
    elif mode == "none":
        est = _identity(n, c, n // 2 if reference is None else reference, (h, w))
    else:
        est = _estimate(
            images,
            mode=mode,
            reference=reference,
            max_size=max_size,
            skip_tolerance=skip_tolerance,
            limits=_Limits(min_score, max_scale_change, max_rotation_deg, max_shift),
        )

    if est.skipped:  # registered: the caller's array itself, untouched (frame reported as the default, crop)
        out = _Warped(images=images, kept=list(range(n)), crop=(0, 0, w, h), gains=est.gains, offsets=est.offsets)
        frame = "crop"
    else:
        out = _warp_layers(images, est, frame=frame, drop_failed=drop_failed, match_brightness=match_brightness)
    result = AlignResult(
        images=out.images,
        mode=est.mode,
        reference=est.reference,
        matrices=est.matrices,
        gains=out.gains,
        offsets=out.offsets,
        scores=est.scores,
        failed=list(est.failed),
        kept=out.kept,
        skipped=est.skipped,
        frame=frame,
        crop=out.crop,
        size=(h, w),
        seconds=time.perf_counter() - t0,
        invalid=dict(est.invalid),
        shifts=est.shifts,
        noise=est.noise,
        residuals=est.residuals,
        parents=dict(est.parents),
    )
    if save_transforms is not None:
        _write_transforms(save_transforms, result)
    return result


def _given_transforms(
    src: str | os.PathLike | dict | AlignResult, *, n: int, c: int, size: tuple[int, int]
) -> _Estimate:
    """The estimate a transforms file, its dict or an earlier result gives for a stack of ``n`` layers of ``size``."""
    if isinstance(src, AlignResult):
        data = src.to_dict()
        where = "result"
    elif isinstance(src, dict):
        data, where = src, "dict"
        _validate_transforms(data, where)
    else:
        data, where = load_transforms(src), str(src)
    return _estimate_from(data, where, n=n, c=c, size=size)
