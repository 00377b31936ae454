"""Fusing one stack of files: load -> (align) -> fuse -> save, with the index map and upstream outputs.

``stackmff fuse`` calls :func:`fuse_to_file`; the benchmark layer (:func:`stackmff.benchmark.fuse_tree`, behind
``fuse-dataset``/``fuse-pairs``, the DVC stages and the Prefect flows) calls it once per scene.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from .. import _memory
from ..errors import StackMFFError
from ..io import (
    IMAGE_EXTENSIONS,
    OutputSet,
    Stack,
    check_output_path,
    collect_files,
    load_stack,
    save_image,
)
from . import DEFAULT_METHOD
from .budget import check_fits, estimate_peak
from .registry import FusionResult, get_fusion_method

__all__ = [
    "check_outputs",
    "fuse_loaded",
    "fuse_to_file",
    "planned_outputs",
    "rainbow",
    "save_index_map",
    "save_upstream_outputs",
    "upstream_outputs",
]

log = logging.getLogger("stackmff")


def fuse_loaded(
    stack: Stack,
    method: str = DEFAULT_METHOD,
    *,
    align: str = "none",
    method_options: dict | None = None,
    align_options: dict | None = None,
    outputs: OutputSet | None = None,
    release_input: bool = False,
) -> tuple[FusionResult, dict]:
    """Align (optionally) and fuse a loaded stack. Returns the result and a dict of timings/diagnostics.

    An ``align_options["save_transforms"]`` file is staged in ``outputs`` when given (written with the command's
    other files, honouring its ``overwrite``), else written at once. ``release_input``: when the layers were
    warped, ``stack.images`` becomes the aligned layers, so that the original pixels are freed before the fusion
    (one copy of the stack while the method runs instead of two; :func:`fuse_to_file`, which loaded the stack).
    """
    fm = get_fusion_method(method)  # fail on a bad name before any work
    info: dict = {}
    images = stack.images
    if align != "none":
        from ..align import align_stack, save_transforms  # lazily: registration is not needed for registered stacks

        opts = dict(align_options or {})
        save_to = opts.pop("save_transforms", None)
        t0 = time.perf_counter()
        aligned = align_stack(images, mode=align, **opts)
        images = aligned.images
        if release_input:
            stack.images = images
        info["align_seconds"] = round(time.perf_counter() - t0, 4)
        info["align"] = aligned.summary()
        if save_to is not None:
            save_transforms(save_to, aligned, outputs=outputs)
    t0 = time.perf_counter()
    result = fm(images, **(method_options or {}))
    info["fuse_seconds"] = round(time.perf_counter() - t0, 4)
    return result, info


def _index_map_paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    return path, path.with_name(path.stem + "_preview.png")


def save_index_map(
    path: str | Path,
    index_map: np.ndarray,
    n_layers: int,
    *,
    overwrite: bool = False,
    outputs: OutputSet | None = None,
) -> list[Path]:
    """Write an index map as a 16-bit PNG (exact layer numbers) plus a colour-mapped ``*_preview.png``, both or
    neither (staged in ``outputs`` when given)."""
    path, preview = _index_map_paths(path)
    for p in (path, preview):
        if p.exists() and not overwrite:
            raise StackMFFError(f"output {p} exists; pass --overwrite to replace it or choose another name")
    idx = np.asarray(index_map).astype(np.uint16)
    scaled = (idx.astype(np.float32) * (255.0 / max(n_layers - 1, 1))).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[..., ::-1]  # BGR -> RGB
    with nullcontext(outputs) if outputs is not None else OutputSet(overwrite=overwrite) as outs:
        save_image(path, idx, bit_depth=16, overwrite=overwrite, outputs=outs)
        save_image(preview, colour.transpose(2, 0, 1).astype(np.float32) / 255.0, overwrite=overwrite, outputs=outs)
    return [path, preview]


def planned_outputs(
    output: str | Path, *, index_map: str | Path | None = None, save_transforms: str | Path | None = None
) -> list[Path]:
    """Every file ``fuse_to_file`` may write for these arguments (index map + preview, transforms)."""
    paths = [Path(output)]
    if index_map is not None:
        paths += list(_index_map_paths(index_map))
    if save_transforms is not None:
        paths.append(Path(save_transforms))
    return paths


def check_outputs(paths: Sequence[Path], *, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse, before any work, outputs that cannot be written, clash with each other or with an input."""
    seen: dict[Path, Path] = {}
    for p in paths:
        real = Path(p).resolve()
        if real in seen:
            raise StackMFFError(f"two outputs are both {p} ({seen[real]}); give them different names")
        seen[real] = Path(p)
        check_output_path(p, overwrite=overwrite, inputs=inputs)
    image = Path(paths[0])
    if image.suffix.lower() not in IMAGE_EXTENSIONS:
        raise StackMFFError(
            f"output {image} has unknown extension {image.suffix or '(none)'}; use .png, .jpg, .tif, .bmp or .webp"
        )


UPSTREAM_OUTPUTS = ("fused_gray", "focus_indices", "focus_colormap", "depth_map", "depth_colormap", "depth_index")


def rainbow(values: np.ndarray) -> np.ndarray:
    """Matplotlib's "rainbow" colour map of ``values`` in [0, 1] (clipped), as upstream's ``gray_to_colormap``:
    ``(H, W, 3)`` uint8 RGB."""
    import matplotlib

    rgba = matplotlib.colormaps["rainbow"](np.clip(np.asarray(values, np.float64), 0, 1))
    return (rgba[..., :3] * 255).astype(np.uint8)


def upstream_outputs(result: FusionResult, n_layers: int, *, reverse: bool = False) -> dict[str, np.ndarray]:
    """The extra images the author's prediction scripts write, computed as they compute them (8-bit, truncated).

    ``fused_gray``: upstream's grayscale fused image (``--preset upstream``: the gathered network-resolution luma
    resized back; otherwise the Rec.601 luma of the fused image); ``focus_indices``: the index map scaled to 8 bits
    (V3 scripts: ``index · (255 // (N - 1))``; V3-star: ``index / (N - 1) · 255``); ``focus_colormap``: rainbow of
    ``index / (N - 1)``. With a depth map (V3-star): ``depth_map`` (``depth · 255``), ``depth_colormap`` and
    ``depth_index`` (the raw index map, saved as ``.npy``). ``reverse`` (the star scripts' ``--reverse``): depth
    becomes ``1 - depth`` and index ``N - 1 - index`` in these outputs (the fused image is unchanged).
    """
    if result.index_map is None:
        raise StackMFFError("upstream outputs need a method with an index map (stackmff_v3, stackmff_v3_star, ...)")
    top = max(n_layers - 1, 1)
    idx = np.asarray(result.index_map).astype(np.int64)
    depth = result.extras.get("depth")
    if reverse:
        idx = (n_layers - 1) - idx
        depth = None if depth is None else 1.0 - depth
    gray = result.extras.get("gray")
    if gray is None:
        from ..color import luma

        gray = luma(result.image)
    out = {"fused_gray": (np.asarray(gray) * 255).astype(np.uint8)}
    if depth is None:
        out["focus_indices"] = idx.astype(np.uint8) * np.uint8(255 // top)
    else:
        out["focus_indices"] = (idx / top * 255).astype(np.uint8)
    out["focus_colormap"] = rainbow(idx.astype(np.float32) / top)
    if depth is not None:
        out["depth_map"] = (np.asarray(depth) * 255).astype(np.uint8)
        out["depth_colormap"] = rainbow(depth)
        out["depth_index"] = idx
    return out


def save_upstream_outputs(
    paths: dict[str, Path],
    result: FusionResult,
    n_layers: int,
    *,
    reverse: bool = False,
    overwrite: bool = False,
    outputs: OutputSet | None = None,
) -> list[Path]:
    """Write :func:`upstream_outputs` to ``paths[name]`` (``depth_index`` as ``.npy``, the rest as images), all or
    none (staged in ``outputs`` when given)."""
    arrays = upstream_outputs(result, n_layers, reverse=reverse)
    written = []
    with nullcontext(outputs) if outputs is not None else OutputSet(overwrite=overwrite) as outs:
        for name, arr in arrays.items():
            p = paths[name]
            if name == "depth_index":
                buf = io.BytesIO()
                np.save(buf, arr)
                outs.write_bytes(p, buf.getbuffer())
            else:
                save_image(p, arr.transpose(2, 0, 1) if arr.ndim == 3 else arr, overwrite=overwrite, outputs=outs)
            written.append(p)
    return written


def _upstream_paths_beside(output: Path) -> dict[str, Path]:
    # fuse: OUT_fused_gray.png, OUT_focus_indices.png ... next to the fused image
    return {
        n: output.with_name(f"{output.stem}_{n}" + (".npy" if n == "depth_index" else ".png")) for n in UPSTREAM_OUTPUTS
    }


def _is_8bit(layer) -> bool:
    fmt = getattr(layer, "integer_format", None)
    return fmt is not None and fmt[1] == 255.0


def _check_memory(stack: Stack, fm, method_options: dict, *, align: bool) -> None:
    """Refuse, before fusing, a stack whose estimated peak (:mod:`stackmff.fusion.budget`) exceeds the free memory."""
    avail = _memory.available_bytes()
    avail_mb = None if avail is None else avail / 2**20
    n, c, h, w = stack.images.shape
    est = estimate_peak(
        fm.name,
        (n, c, h, w),
        input_bytes=int(stack.images.nbytes),
        learned=fm.learned,
        align=align,
        memory_budget_mb=method_options.get("memory_budget_mb"),
        gather=method_options.get("gather", "hard" if fm.ordered else "pyramid"),
        available_mb=avail_mb,
        aligned_bytes=1 if all(_is_8bit(layer) for layer in getattr(stack.images, "layers", ())) else 2,
    )
    log.debug("estimated peak memory %s", est.describe())
    check_fits(est, avail_mb, f"fusing {n} layers of {w}x{h} with {fm.name}", resident_mb=_memory.resident_mb())


def fuse_to_file(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    method: str = DEFAULT_METHOD,
    *,
    index_map: str | Path | None = None,
    overwrite: bool = False,
    align: str = "none",
    bit_depth: int | None = None,
    method_options: dict | None = None,
    align_options: dict | None = None,
    upstream: dict[str, Path] | bool = False,
    reverse: bool = False,
) -> dict:
    """Fuse the images ``inputs`` (folder or files) into ``output``; returns a JSON-able summary.

    Everything checkable from the arguments (output paths, method options, weights, device) is checked before the
    images are loaded. The fused image, the index map + preview, the transforms file (``align_options``
    ``save_transforms``) and the upstream outputs are written together or not at all; existing outputs are refused
    unless ``overwrite``. ``upstream``: also write the upstream scripts' outputs (:func:`upstream_outputs`; True =
    ``OUT_<name>.png`` beside the fused image, or a dict of paths by name), ``reverse`` flipping their index and depth.
    """
    output = Path(output)
    up_paths = _upstream_paths_beside(output) if upstream is True else (upstream or None)
    fm = get_fusion_method(method)
    save_to = (align_options or {}).get("save_transforms") if align != "none" else None
    files = collect_files(inputs)
    planned = planned_outputs(output, index_map=index_map, save_transforms=save_to) + list((up_paths or {}).values())
    check_outputs(planned, overwrite=overwrite, inputs=files)
    method_options = fm.check_options(method_options or {})
    if align != "none" and (align_options or {}).get("transforms") is not None:
        from ..align import load_transforms

        if isinstance(align_options["transforms"], (str, Path)):
            load_transforms(align_options["transforms"])  # a missing or malformed file fails now, not after loading
    t0 = time.perf_counter()
    # every method reads the stack layer by layer or region by region: keep the decoded 8/16-bit pixels (4x/2x less
    # memory than float32), converted where they are read
    stack = load_stack(files, compact=True)
    t_load = time.perf_counter() - t0
    _check_memory(stack, fm, method_options, align=align != "none")
    with OutputSet(overwrite=overwrite) as outs:
        # the input's shape (the fusion replaces stack.images by the aligned layers, which may be fewer and cropped)
        n_layers, (h, w), channels = stack.n, stack.size, int(stack.images.shape[1])
        result, info = fuse_loaded(
            stack,
            method,
            align=align,
            method_options=method_options,
            align_options=align_options,
            outputs=outs,
            release_input=True,
        )
        bits = bit_depth or stack.bit_depth
        save_image(output, result.image, bit_depth=bits, overwrite=overwrite, outputs=outs)
        written = [str(output)]
        if index_map is not None:
            if result.index_map is None:
                log.warning("method %s has no index map; --index-map ignored", method)
            else:
                maps = save_index_map(index_map, result.index_map, n_layers, overwrite=overwrite, outputs=outs)
                written += [str(p) for p in maps]
        if up_paths:
            ups = save_upstream_outputs(up_paths, result, n_layers, reverse=reverse, overwrite=overwrite, outputs=outs)
            written += [str(p) for p in ups]
        if save_to is not None:
            written.append(str(save_to))
    # learned methods: network time, where it ran, CPU threads used, GPU memory at its peak (CUDA)
    for key in ("network_seconds", "device", "threads", "thread_counts", "gpu_peak_mb"):
        if key in result.extras:
            info[key] = result.extras[key]
    return {
        "inputs": [str(p) for p in dict.fromkeys(stack.paths)],
        "layers": n_layers,
        "method": method,
        "width": w,
        "height": h,
        "channels": channels,
        "bit_depth": bits,
        "outputs": written,
        "load_seconds": round(t_load, 4),
        "seconds": round(time.perf_counter() - t0, 4),
        **info,
    }
