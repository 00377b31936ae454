"""What ``stackmff fuse`` holds at its peak, term by term: the formula behind ``--memory-budget`` and the check
that refuses, before the fusion starts, a stack that cannot fit in the memory available.

Peak resident memory of the command (MB) ≈ ``libraries + input + aligned + output + working``:

- ``libraries``: the interpreter, NumPy/OpenCV and, for the learned methods, torch (the CUDA build's library pages
  released on CPU, :func:`stackmff.models.device.drop_gpu_library_pages`);
- ``input``: the stack as loaded, its decoded 8/16-bit pixels (N · C · H · W bytes for 8-bit files);
- ``aligned``: with ``--align`` other than ``none``, a warped copy in 16-bit layers (2 · N · C · H · W bytes) when
  the layers need warping (``auto`` leaves a registered stack untouched: 0);
- ``output``: the float32 fused image (4 · C · H · W) and the index and confidence maps of the methods that have
  them (8 · H · W), plus the encoded copy;
- ``working``: for the learned methods the network's ``memory_budget_mb`` (its tiles, whatever the image size)
  plus, for the default ``gather="pyramid"``, the blended logits of every layer in fp16 (2 · N · H · W) and the
  blend's half-resolution planes; for the classical methods a fixed number of bytes per pixel of one layer
  (:data:`WORKING_BYTES_PER_PIXEL`): they stream over the layers, so it does not grow with N.

The byte counts per pixel were measured with ``python -m pipelines.benchmarks.grid`` (peak RSS of whole commands,
3 × 40 MP and 10 × 12 MP 8-bit JPEG stacks) and are rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StackMFFError

__all__ = ["WORKING_BYTES_PER_PIXEL", "PeakEstimate", "auto_budget_cap_mb", "check_fits", "estimate_peak"]

# working memory of each classical method per pixel of one layer (float32 planes of the image besides the stack and
# the output image), measured on RGB stacks and rounded up
# (peak RSS of `stackmff fuse` on 3 x 40 MP JPEGs minus libraries, stack and output: focus_measure 43, guided_filter
# 145, laplacian_pyramid 16, wavelet 42 bytes per pixel)
WORKING_BYTES_PER_PIXEL = {
    "focus_measure": 48.0,
    "guided_filter": 160.0,
    "laplacian_pyramid": 24.0,
    "wavelet": 48.0,
}
_DEFAULT_WORKING = 160.0  # a method not measured here (a plugin): as much as the most expensive classical one
_LIBRARIES_MB = {False: 120.0, True: 450.0}  # resident after the imports: classical, learned (torch on CPU)
_PYRAMID_BLEND_BYTES_PER_PIXEL = 8.0  # log-sum-exp plane and the half-resolution pyramids of pyramid_blend


@dataclass(frozen=True)
class PeakEstimate:
    """The terms of the peak (MB); ``total`` is their sum."""

    libraries: float
    input: float
    aligned: float
    output: float
    working: float
    budget: float | None  # the network's memory_budget_mb inside ``working`` (learned methods), else None

    @property
    def total(self) -> float:
        return self.libraries + self.input + self.aligned + self.output + self.working

    def describe(self) -> str:
        net = f", of it {self.budget:.0f} network budget" if self.budget is not None else ""
        return (
            f"~{self.total:.0f} MB: stack {self.input:.0f} + aligned copy {self.aligned:.0f} + output "
            f"{self.output:.0f} + working {self.working:.0f}{net} + libraries {self.libraries:.0f}"
        )


def auto_budget_cap_mb(available_mb: float) -> float:
    """The largest budget :func:`stackmff.models.tiling.auto_memory_budget` picks: 1/8 of the available memory,
    between 256 and 1024 MB (stated here without torch, for the estimate)."""
    return max(256.0, min(1024.0, available_mb / 8))


def estimate_peak(
    method: str,
    shape: tuple[int, int, int, int],
    *,
    input_bytes: int,
    learned: bool,
    align: bool,
    memory_budget_mb: float | None = None,
    gather: str = "pyramid",
    available_mb: float | None = None,
) -> PeakEstimate:
    """The peak of ``stackmff fuse`` on a stack of ``shape`` ``(N, C, H, W)`` by the formula of this module.

    Args:
        method: the fusion method's name.
        shape: ``(N, C, H, W)`` of the loaded stack.
        input_bytes: bytes the loaded stack holds (``stack.images.nbytes``).
        learned: a learned method (torch, the network budget).
        align: alignment may warp the layers (a 16-bit copy of the stack).
        memory_budget_mb: the network's budget; ``None``: the most :func:`auto_budget_cap_mb` would choose.
        gather: the learned methods' colour rule ("pyramid" keeps fp16 logits of every layer).
        available_mb: the memory available, for the automatic budget (default 8 GB).
    """
    n, c, h, w = shape
    px, mb = h * w, 2.0**20
    out = (4 * c * px + 2 * c * px + 8 * px) / mb  # float image, its encoded copy, index and confidence maps
    budget = None
    if learned:
        budget = memory_budget_mb if memory_budget_mb is not None else auto_budget_cap_mb(available_mb or 8192.0)
        working = budget
        if gather == "pyramid":
            working += (2 * n * px + _PYRAMID_BLEND_BYTES_PER_PIXEL * px) / mb
    else:
        working = WORKING_BYTES_PER_PIXEL.get(method, _DEFAULT_WORKING) * px / mb
    return PeakEstimate(
        libraries=_LIBRARIES_MB[learned],
        input=input_bytes / mb,
        aligned=2 * n * c * px / mb if align else 0.0,
        output=out,
        working=working,
        budget=budget,
    )


def check_fits(estimate: PeakEstimate, available_mb: float | None, what: str, *, resident_mb: float = 0.0) -> None:
    """Refuse, in one line, a fusion whose estimated peak exceeds the memory available now (``None``: unknown, no
    check) plus ``resident_mb``, what the process already holds (the loaded stack, the imports so far)."""
    if available_mb is None or estimate.total <= available_mb + resident_mb:
        return
    fix = "lower --memory-budget, " if estimate.budget is not None and estimate.budget > 256 else ""
    raise StackMFFError(
        f"{what} needs {estimate.describe()}, but only {available_mb + resident_mb:.0f} MB is available; {fix}fuse fewer layers "
        "at a time, use --align none for a registered stack, downscale the images, or free memory"
    )
