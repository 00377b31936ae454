"""What :func:`stackmff.align.align_stack` returns: the aligned layers and the transforms that produced them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .transforms import _max_corner_shift
from .transforms_file import TRANSFORMS_FORMAT, TRANSFORMS_VERSION

__all__ = ["AlignResult"]


@dataclass
class AlignResult:
    """Aligned layers and the transforms that produced them.

    Attributes:
        images: ``(N', C, H', W')`` float32 in [0, 1], the aligned layers (``N' < N`` when failed layers were
            dropped; ``H' x W'`` is the crop in ``crop`` frame). When ``skipped`` it is the input array itself.
            A compact input (:class:`stackmff.io.CompactStack`) gives a compact stack (same interface): 8-bit
            layers when every input layer is 8-bit (the warped values rounded to 8 bits, a quarter of the memory of
            float32), else 16-bit layers.
        mode: the motion model used (``none`` when nothing was estimated).
        reference: index (in the input) of the reference layer.
        matrices: ``(N, 3, 3)`` float64, reference -> layer pixel coordinates at input resolution.
        gains: ``(N, C)`` per-layer, per-channel brightness gain applied (1 for untouched layers).
        offsets: ``(N, C)`` per-layer, per-channel brightness offset applied.
        scores: ``(N,)`` ECC correlation of each layer's link to its neighbour (1 for the reference, NaN if unknown).
        failed: input indices of layers whose alignment failed.
        kept: input indices of the layers in ``images``, in order.
        skipped: True when the stack was found registered (or mode ``none``) and returned unchanged.
        invalid: distrusted input layers and why (exposure/blank/unrelated, much noisier, blurred everywhere):
            never the reference, never the brightness target, not in the crop; they follow their nearest valid layer.
        shifts: ``(N,)`` per layer, the largest corner displacement to the reference the check measured (input px).
        noise: ``(N,)`` its standard error, from the spread of the patch displacements (input px).
        residuals: ``(N,)`` registration error left after alignment against the layer's parent (input px).
        parents: the layer each layer was registered to (the link tree, chosen from content).
        frame: ``crop`` or ``fill``.
        crop: ``(x0, y0, width, height)`` of the output in the reference frame.
        size: ``(height, width)`` of the input layers.
        seconds: wall time of the call.
    """

    images: np.ndarray
    mode: str
    reference: int
    matrices: np.ndarray
    gains: np.ndarray
    offsets: np.ndarray
    scores: np.ndarray
    failed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)
    skipped: bool = False
    frame: str = "crop"
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    invalid: dict[int, str] = field(default_factory=dict)
    shifts: np.ndarray | None = None
    noise: np.ndarray | None = None
    residuals: np.ndarray | None = None
    parents: dict[int, int] = field(default_factory=dict)

    @property
    def dropped(self) -> list[int]:
        """Input indices of layers left out of ``images``."""
        keep = set(self.kept)
        return [i for i in range(len(self.matrices)) if i not in keep]

    def layer_summaries(self) -> list[dict]:
        """Per-layer transform parameters (similarity part: scale, rotation, shift) and fit, JSON-able."""
        out = []
        for i, m in enumerate(self.matrices):
            a = m[:2, :2] / m[2, 2]
            scale = math.sqrt(abs(float(np.linalg.det(a))))
            rot = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
            out.append(
                {
                    "index": i,
                    "scale": round(scale, 6),
                    "rotation_deg": round(rot, 4),
                    "tx": round(float(m[0, 2] / m[2, 2]), 3),
                    "ty": round(float(m[1, 2] / m[2, 2]), 3),
                    "score": None if not np.isfinite(self.scores[i]) else round(float(self.scores[i]), 4),
                    "gain": [round(float(g), 4) for g in self.gains[i]],
                    "offset": [round(float(o), 4) for o in self.offsets[i]],
                    "failed": i in self.failed,
                    "distrusted": self.invalid.get(i),
                    "linked_to": self.parents.get(i),
                    "shift_px": _rounded(self.shifts, i),
                    "shift_noise_px": _rounded(self.noise, i),
                    "residual_px": _rounded(self.residuals, i),
                }
            )
        return out

    def summary(self) -> dict:
        """A JSON-able report: mode, reference, skipped, frame/crop, failed and dropped layers, per-layer transforms."""
        return {
            "mode": self.mode,
            "reference": self.reference,
            "skipped": self.skipped,
            "frame": self.frame,
            "crop": list(self.crop),
            "input_size": list(self.size),
            "output_size": [int(self.images.shape[2]), int(self.images.shape[3])],
            "failed": list(self.failed),
            "dropped": self.dropped,
            "distrusted": {str(k): v for k, v in sorted(self.invalid.items())},
            "max_residual_px": None
            if self.residuals is None or not np.isfinite(self.residuals).any()
            else round(float(np.nanmax(self.residuals)), 3),
            "max_shift_px": round(_max_corner_shift(self.matrices, self.size), 3),
            "seconds": round(self.seconds, 4),
            "layers": self.layer_summaries(),
        }

    def to_dict(self) -> dict:
        """The transforms-file content (see :func:`save_transforms`)."""
        return {
            "format": TRANSFORMS_FORMAT,
            "version": TRANSFORMS_VERSION,
            "mode": self.mode,
            "reference": self.reference,
            "n_layers": len(self.matrices),
            "height": self.size[0],
            "width": self.size[1],
            "skipped": self.skipped,
            "failed": list(self.failed),
            "layers": [
                {
                    "index": i,
                    "matrix": [[float(v) for v in row] for row in self.matrices[i]],
                    "gain": [float(g) for g in self.gains[i]],
                    "offset": [float(o) for o in self.offsets[i]],
                    "score": None if not np.isfinite(self.scores[i]) else float(self.scores[i]),
                }
                for i in range(len(self.matrices))
            ],
        }


def _rounded(values: np.ndarray | None, i: int) -> float | None:
    if values is None or not np.isfinite(values[i]):
        return None
    return round(float(values[i]), 3)
