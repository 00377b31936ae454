"""What ``stackmff fuse`` holds at its peak, term by term: the formula behind ``--memory-budget`` and the check
that refuses, before the fusion starts, a stack that cannot fit in the memory available.

Peak resident memory of the command (MB) ≈ ``libraries + input + aligned + output + working``, or, when alignment
may warp, ``libraries + aligned + max(input, output + working)`` (the loaded layers are freed once warped, before
the fusion):

- ``libraries``: the interpreter, NumPy/OpenCV and, for the learned methods, torch (the CUDA build's library pages
  released on CPU, :func:`stackmff.models.device.drop_gpu_library_pages`);
- ``input``: the stack as loaded, its decoded 8/16-bit pixels (N · C · H · W bytes for 8-bit files);
- ``aligned``: with ``--align`` other than ``none``, the warped layers (N · C · H · W bytes for 8-bit files, twice that
  for 16-bit ones) when the layers need warping (``auto`` leaves a registered stack untouched, but the estimate
  cannot know that before the check);
- ``output``: the float32 fused image (4 · C · H · W), the index and confidence maps (8 · H · W; the learned
  methods keep them in 3 · H · W bytes while the network runs, uint8 and float16), plus the encoded copy;
- ``working``: for the learned methods the network's ``memory_budget_mb`` (its tiles, whatever the image size)
  plus, for the default ``gather="pyramid"``, the half-resolution probabilities of every layer (float32 at 1/4 of
  the pixels: N · H · W bytes; the blend consumes the network's logits band by band,
  :class:`~stackmff.fusion.pyramid_blend.PyramidBlend`) and the blend's half-resolution planes; for the classical
  methods, which stream over the layers and work in row strips, a few bytes per pixel of whole-image planes
  (:data:`WORKING_BYTES_PER_PIXEL`) plus the planes of one strip (:data:`STRIP_BYTES_PER_PIXEL` times the width
  times :func:`strip_rows`): neither grows with N, and the strip term does not grow with the height.

The byte counts per pixel were measured with ``python -m pipelines.benchmarks.grid`` (peak RSS of whole commands,
3 × 40 MP and 10 × 12 MP 8-bit JPEG stacks) and with ``/usr/bin/time -f %M stackmff fuse`` on 3 × 12 MP, and are
rounded up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StackMFFError

__all__ = [
    "STRIP_BYTES_PER_PIXEL",
    "WORKING_BYTES_PER_PIXEL",
    "PeakEstimate",
    "auto_budget_cap_mb",
    "check_fits",
    "estimate_peak",
    "strip_rows",
]

# working memory of each classical method: whole-image planes per pixel of one layer (what is left of image-sized
# buffers: focus_measure's int64 index map, the coarse pyramid/wavelet levels) plus a few planes of one row strip
# (STRIP_BYTES_PER_PIXEL per pixel of a strip of strip_rows(...) rows, whole width), which do not grow with the height.
# Rounded up to cover the whole-command runs (peak RSS of `stackmff fuse`, 8-bit RGB JPEGs, JPEG output, minus
# libraries, stack and output; -O defaults): 3 x 40 MP focus_measure 1601 MB, guided_filter 1476, wavelet 1170,
# laplacian_pyramid 1248; 3 x 12 MP 559, 643, 502, 490. The peak of these methods is not in the strips but where the
# output is made (image, maps, the encoded copy), so the sum overstates it a little: the guided filter's, wavelet's
# and pyramid's actual peaks lie below libraries + stack + output (the output term counts index and confidence
# maps that they do not make)
WORKING_BYTES_PER_PIXEL = {
    "focus_measure": 4.0,
    "guided_filter": 0.0,
    "laplacian_pyramid": 4.0,
    "wavelet": 4.0,
}
STRIP_BYTES_PER_PIXEL = {
    "focus_measure": 16.0,
    "guided_filter": 100.0,
    "laplacian_pyramid": 16.0,
    "wavelet": 16.0,
}
_STRIP_ROWS = 256  # the methods' default strip_rows


def strip_rows(method: str, height: int, width: int) -> int:
    """Rows of one strip of a classical method with its margins (the default options)."""
    if method == "focus_measure":  # focus window, twice the guided-filter radius (1 % of the long side), majority
        return _STRIP_ROWS + 2 * (1 + 8 + 2 * max(4, round(0.01 * max(height, width))) + 2)
    if method == "guided_filter":  # saliency window + twice the base-weight radius 45
        return _STRIP_ROWS + 2 * 96
    if method == "wavelet":  # bior4.4's filter and the majority filter, at both ends of a strip
        return _STRIP_ROWS + 2 * 12
    return _STRIP_ROWS + 2 * 8  # laplacian_pyramid: pyrDown + pyrUp, salience box, majority filter


_DEFAULT_WORKING = 160.0  # a method not measured here (a plugin): 40 float32 planes of the whole image
_LIBRARIES_MB = {False: 120.0, True: 450.0}  # resident after the imports: classical, learned (torch on CPU)
# PyramidBlend besides its half-resolution probabilities: the kept logit rows and strip planes while the network's
# band is held, the half-resolution pyramids and running sums at the end (10 x 12 MP JPEGs, default command, auto
# budget 256: peak 1406-1449 MB measured, 1541 by the formula)
_PYRAMID_BLEND_BYTES_PER_PIXEL = 12.0


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
        if self.aligned:  # the loaded layers are freed once warped: they and the fusion's memory never coexist
            return self.libraries + self.aligned + max(self.input, self.output + self.working)
        return self.libraries + self.input + self.output + self.working

    def describe(self) -> str:
        net = f", of it {self.budget:.0f} network budget" if self.budget is not None else ""
        if self.aligned:
            return (
                f"~{self.total:.0f} MB: aligned copy {self.aligned:.0f} + the larger of the stack {self.input:.0f} "
                f"(freed once warped) and output {self.output:.0f} + working {self.working:.0f}{net}, + libraries "
                f"{self.libraries:.0f}"
            )
        return (
            f"~{self.total:.0f} MB: stack {self.input:.0f} + output {self.output:.0f} + working "
            f"{self.working:.0f}{net} + libraries {self.libraries:.0f}"
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
    aligned_bytes: int = 2,
) -> PeakEstimate:
    """The peak of ``stackmff fuse`` on a stack of ``shape`` ``(N, C, H, W)`` by the formula of this module.

    Args:
        method: the fusion method's name.
        shape: ``(N, C, H, W)`` of the loaded stack.
        input_bytes: bytes the loaded stack holds (``stack.images.nbytes``).
        learned: a learned method (torch, the network budget).
        align: alignment may warp the layers (a copy of the stack, ``aligned_bytes`` per sample; the loaded layers
            are then freed before the fusion).
        memory_budget_mb: the network's budget; ``None``: the most :func:`auto_budget_cap_mb` would choose.
        gather: the learned methods' colour rule ("pyramid" keeps half-resolution probabilities of every layer).
        available_mb: the memory available, for the automatic budget (default 8 GB).
        aligned_bytes: bytes per sample of the warped layers: 1 when every layer is 8-bit, else 2.
    """
    n, c, h, w = shape
    px, mb = h * w, 2.0**20
    # index and confidence maps: uint8 + float16 while the network runs, else int32 + float32
    maps = 3 if learned else 8
    out = (4 * c * px + 2 * c * px + maps * px) / mb  # float image, its encoded copy, the maps
    budget = None
    if learned:
        budget = memory_budget_mb if memory_budget_mb is not None else auto_budget_cap_mb(available_mb or 8192.0)
        working = budget
        if gather == "pyramid":
            working += (n * px + _PYRAMID_BLEND_BYTES_PER_PIXEL * px) / mb
    elif method in WORKING_BYTES_PER_PIXEL:
        rows = min(h, strip_rows(method, h, w))
        working = (WORKING_BYTES_PER_PIXEL[method] * px + STRIP_BYTES_PER_PIXEL[method] * rows * w) / mb
    else:
        working = _DEFAULT_WORKING * px / mb
    return PeakEstimate(
        libraries=_LIBRARIES_MB[learned],
        input=input_bytes / mb,
        aligned=aligned_bytes * n * c * px / mb if align else 0.0,
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
