"""The transforms file: a small JSON file with, per layer, the 3x3 reference -> layer matrix at the input resolution,
the brightness gain and offset and the fit score, plus mode, reference index, layer count and size.

Written by :func:`save_transforms` (:meth:`stackmff.align.AlignResult.to_dict` is its content), read and validated by
:func:`load_transforms`; ``align_stack(..., transforms=path)`` applies one (rescaled when made at another resolution).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StackMFFError
from .estimate import _Estimate
from .transforms import ALIGN_MODES, _grid_scale

if TYPE_CHECKING:
    from ..io import OutputSet
    from .result import AlignResult

__all__ = ["TRANSFORMS_FORMAT", "TRANSFORMS_VERSION", "load_transforms", "save_transforms"]

log = logging.getLogger("stackmff")

TRANSFORMS_FORMAT = "stackmff-transforms"
TRANSFORMS_VERSION = 1


def save_transforms(
    path: str | os.PathLike, result: AlignResult, *, overwrite: bool = True, outputs: OutputSet | None = None
) -> Path:
    """Write ``result``'s transforms to a small JSON file, atomically (temp file + rename).

    The file holds, per layer, the 3x3 reference -> layer matrix at the input resolution, the brightness gain and
    offset and the fit score, plus mode, reference index, layer count and size. Load it with
    :func:`load_transforms` or pass it as ``align_stack(..., transforms=path)``. ``overwrite=False`` refuses an
    existing file; with ``outputs`` the file is staged in that :class:`~stackmff.io.OutputSet` (written together
    with the command's other outputs).
    """
    return _write_transforms(path, result, overwrite=overwrite, outputs=outputs)


def _write_transforms(
    path: str | os.PathLike, result: AlignResult, *, overwrite: bool = True, outputs: OutputSet | None = None
) -> Path:
    from ..io import OutputSet

    path = Path(path)
    data = (json.dumps(result.to_dict(), indent=1) + "\n").encode()
    if outputs is not None:
        outputs.write_bytes(path, data)
        return path
    with OutputSet(overwrite=overwrite) as outs:
        outs.write_bytes(path, data)
    return path


def load_transforms(path: str | os.PathLike) -> dict:
    """Read and validate a transforms file written by :func:`save_transforms`.

    Raises:
        StackMFFError: missing, unreadable or malformed file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StackMFFError(
            f"transforms file {path} does not exist; check the path or save one with --save-transforms"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StackMFFError(
            f"transforms file {path} is not valid JSON ({exc.__class__.__name__}); re-create it with --save-transforms"
        ) from None
    _validate_transforms(data, str(path))
    return data


def _validate_transforms(data: Any, where: str) -> None:
    def bad(what: str) -> StackMFFError:
        return StackMFFError(f"transforms {where} is malformed: {what}; re-create it with --save-transforms")

    if not isinstance(data, dict) or data.get("format") != TRANSFORMS_FORMAT:
        raise bad(f"no 'format': '{TRANSFORMS_FORMAT}' entry")
    if data.get("version") != TRANSFORMS_VERSION:
        raise bad(f"version {data.get('version')!r} is not {TRANSFORMS_VERSION}")
    layers = data.get("layers")
    if not isinstance(layers, list) or len(layers) < 2 or data.get("n_layers") != len(layers):
        raise bad("'layers' must list every layer and match 'n_layers'")
    for key in ("height", "width", "reference"):
        if not isinstance(data.get(key), int) or data[key] < 0:
            raise bad(f"'{key}' must be a non-negative integer")
    if data["reference"] >= len(layers):
        raise bad(f"reference {data['reference']} is not a layer index")
    if data.get("mode") not in ALIGN_MODES:
        raise bad(f"mode {data.get('mode')!r} is unknown")
    for i, layer in enumerate(layers):
        try:
            m = np.asarray(layer["matrix"], dtype=np.float64)
            g = np.asarray(layer.get("gain", [1.0]), dtype=np.float64)
            o = np.asarray(layer.get("offset", [0.0]), dtype=np.float64)
        except (TypeError, ValueError, KeyError):
            raise bad(f"layer {i} has no numeric 'matrix'") from None
        if m.shape != (3, 3) or not np.isfinite(m).all() or abs(np.linalg.det(m)) < 1e-9:
            raise bad(f"layer {i} matrix must be an invertible, finite 3x3 matrix")
        if g.ndim != 1 or o.shape != g.shape or not (np.isfinite(g).all() and np.isfinite(o).all()):
            raise bad(f"layer {i} gain/offset must be equal-length lists of numbers")


def _estimate_from(data: dict, where: str, *, n: int, c: int, size: tuple[int, int]) -> _Estimate:
    """Turn validated transforms-file content (read from ``where``) into an estimate for a stack of ``n`` layers of
    ``size``."""
    if data["n_layers"] != n:
        raise StackMFFError(
            f"transforms {where} are for {data['n_layers']} layers but the stack has {n}; "
            "use the transforms of a stack with the same number of layers or estimate new ones"
        )
    layers = data["layers"]
    mats = np.stack([np.asarray(x["matrix"], dtype=np.float64) for x in layers])
    gains = np.ones((n, c))
    offsets = np.zeros((n, c))
    for i, x in enumerate(layers):
        g, o = np.asarray(x.get("gain", [1.0]), float), np.asarray(x.get("offset", [0.0]), float)
        if g.size not in (1, c):
            raise StackMFFError(
                f"transforms {where} have {g.size}-channel gains but the stack has {c} channels; estimate new ones"
            )
        gains[i], offsets[i] = g, o
    h0, w0 = data["height"], data["width"]
    if (h0, w0) != size and h0 > 0 and w0 > 0:
        # same sequence at another resolution: conjugate with the pixel-centre scaling between the two grids
        log.info("rescaling transforms made at %dx%d to %dx%d", w0, h0, size[1], size[0])
        s = _grid_scale((h0, w0), size)
        mats = np.stack([s @ m @ np.linalg.inv(s) for m in mats])
    scores = np.array([np.nan if x.get("score") is None else float(x["score"]) for x in layers])
    return _Estimate(
        mode=data["mode"],
        reference=int(data["reference"]),
        matrices=mats / mats[:, 2:3, 2:3],
        gains=gains,
        offsets=offsets,
        scores=scores,
        size=size,
        failed=[int(i) for i in data.get("failed", [])],
        skipped=bool(data.get("skipped", False)),
    )
