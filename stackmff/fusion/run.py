"""Fusing files and dataset trees: load -> (align) -> fuse -> save, shared by the CLI, DVC stages and Prefect flows."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from .._checks import StackMFFError
from ..io import Stack, find_pair_scenes, find_stack_scenes, load_stack, save_image
from . import DEFAULT_METHOD
from .registry import FusionResult, get_fusion_method

__all__ = [
    "fuse_dataset",
    "fuse_loaded",
    "fuse_pairs",
    "fuse_to_file",
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
) -> tuple[FusionResult, dict]:
    """Align (optionally) and fuse a loaded stack. Returns the result and a dict of timings/diagnostics."""
    fm = get_fusion_method(method)  # fail on a bad name before any work
    info: dict = {}
    images = stack.images
    if align != "none":
        from ..align import align_stack  # imported lazily: OpenCV registration is not needed for registered stacks

        t0 = time.perf_counter()
        aligned = align_stack(images, mode=align, **(align_options or {}))
        images = aligned.images
        info["align_seconds"] = round(time.perf_counter() - t0, 4)
        info["align"] = aligned.summary()
    t0 = time.perf_counter()
    result = fm(images, **(method_options or {}))
    info["fuse_seconds"] = round(time.perf_counter() - t0, 4)
    return result, info


def save_index_map(path: str | Path, index_map: np.ndarray, n_layers: int, *, overwrite: bool = False) -> list[Path]:
    """Write an index map as a 16-bit PNG (exact layer numbers) plus a colour-mapped ``*_preview.png``."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    preview = path.with_name(path.stem + "_preview.png")
    for p in (path, preview):
        if p.exists() and not overwrite:
            raise StackMFFError(f"output {p} exists; pass --overwrite to replace it or choose another name")
    idx = np.asarray(index_map).astype(np.uint16)
    save_image(path, idx, bit_depth=16, overwrite=overwrite)
    scaled = (idx.astype(np.float32) * (255.0 / max(n_layers - 1, 1))).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO)[..., ::-1]  # BGR -> RGB
    save_image(preview, colour.transpose(2, 0, 1).astype(np.float32) / 255.0, overwrite=overwrite)
    return [path, preview]


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
        from ..models.inference import luma

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
    paths: dict[str, Path], result: FusionResult, n_layers: int, *, reverse: bool = False, overwrite: bool = False
) -> list[Path]:
    """Write :func:`upstream_outputs` to ``paths[name]`` (``depth_index`` as ``.npy``, the rest as images)."""
    outs = upstream_outputs(result, n_layers, reverse=reverse)
    for name in outs:
        if paths[name].exists() and not overwrite:
            raise StackMFFError(f"output {paths[name]} exists; pass --overwrite to replace it or choose another name")
    written = []
    for name, arr in outs.items():
        p = paths[name]
        if name == "depth_index":
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_name(f".{p.name}.tmp.npy")
            np.save(tmp, arr)
            tmp.replace(p)
        else:
            save_image(p, arr.transpose(2, 0, 1) if arr.ndim == 3 else arr, overwrite=overwrite)
        written.append(p)
    return written


def _upstream_paths_beside(output: Path) -> dict[str, Path]:
    # fuse: OUT_fused_gray.png, OUT_focus_indices.png ... next to the fused image
    return {
        n: output.with_name(f"{output.stem}_{n}" + (".npy" if n == "depth_index" else ".png")) for n in UPSTREAM_OUTPUTS
    }


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

    Nothing is written unless fusion succeeds; existing outputs are refused unless ``overwrite``. ``upstream``:
    also write the upstream scripts' outputs (:func:`upstream_outputs`; True = ``OUT_<name>.png`` beside the fused
    image, or a dict of paths by name), ``reverse`` flipping their index and depth.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise StackMFFError(f"output {output} exists; pass --overwrite to replace it or choose another name")
    if index_map is not None and not overwrite:  # refuse before anything is written, not after the fused image
        imap = Path(index_map).with_suffix(".png")
        for p in (imap, imap.with_name(imap.stem + "_preview.png")):
            if p.exists():
                raise StackMFFError(f"output {p} exists; pass --overwrite to replace it or choose another name")
    up_paths = _upstream_paths_beside(output) if upstream is True else (upstream or None)
    if up_paths and not overwrite:
        for p in up_paths.values():
            if p.exists():
                raise StackMFFError(f"output {p} exists; pass --overwrite to replace it or choose another name")
    fm = get_fusion_method(method)
    t0 = time.perf_counter()
    # the learned methods read the stack region by region: keep the decoded 8/16-bit pixels (4x/2x less memory)
    stack = load_stack(inputs, compact=fm.learned)
    t_load = time.perf_counter() - t0
    result, info = fuse_loaded(stack, method, align=align, method_options=method_options, align_options=align_options)
    bits = bit_depth or stack.bit_depth
    save_image(output, result.image, bit_depth=bits, overwrite=overwrite)
    written = [str(output)]
    if index_map is not None:
        if result.index_map is None:
            log.warning("method %s has no index map; --index-map ignored", method)
        else:
            written += [str(p) for p in save_index_map(index_map, result.index_map, stack.n, overwrite=overwrite)]
    if up_paths:
        written += [
            str(p) for p in save_upstream_outputs(up_paths, result, stack.n, reverse=reverse, overwrite=overwrite)
        ]
    if "network_seconds" in result.extras:
        info["network_seconds"] = result.extras["network_seconds"]
    h, w = stack.size
    return {
        "inputs": [str(p) for p in dict.fromkeys(stack.paths)],
        "layers": stack.n,
        "method": method,
        "width": w,
        "height": h,
        "channels": int(stack.images.shape[1]),
        "bit_depth": bits,
        "outputs": written,
        "load_seconds": round(t_load, 4),
        "seconds": round(time.perf_counter() - t0, 4),
        **info,
    }


def _progress(items: list, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="stack")


def fuse_dataset(
    root: str | Path,
    outdir: str | Path,
    method: str = DEFAULT_METHOD,
    *,
    datasets: Iterable[str] | None = None,
    ext: str = ".png",
    overwrite: bool = False,
    align: str = "none",
    index_maps: bool = False,
    progress: bool = True,
    method_options: dict | None = None,
    align_options: dict | None = None,
    upstream: bool = False,
    reverse: bool = False,
    warmup: int = 0,
) -> list[dict]:
    """Fuse every stack of ``<root>/<dataset>/dof_stack/<scene>/`` into ``<outdir>/<dataset>/<scene><ext>``.

    With ``index_maps`` the index maps go to ``<outdir>/<dataset>/index_maps/<scene>.png``. ``align_options`` are
    :func:`stackmff.align.align_stack` keywords applied to every stack (e.g. ``frame``, ``drop_failed``).
    ``upstream``: also the upstream scripts' outputs in ``<outdir>/<dataset>/<name>/<scene>.png`` (names of
    :func:`upstream_outputs`; ``reverse`` flips their index/depth). ``warmup``: fuse each dataset's first stack this
    many times, untimed, before its stacks are timed (upstream: 3 network passes), so that per-dataset mean times
    (``fuse_seconds``, and ``network_seconds`` with ``--preset upstream``) leave out one-off start-up costs.
    """
    scenes = [(sc.dataset, sc.scene, sc.stack_dir) for sc in find_stack_scenes(root, datasets)]
    return _fuse_many(
        scenes,
        outdir,
        method,
        ext=ext,
        index_maps=index_maps,
        overwrite=overwrite,
        align=align,
        progress=progress,
        method_options=method_options,
        align_options=align_options,
        upstream=upstream,
        reverse=reverse,
        warmup=warmup,
    )


def fuse_pairs(
    root: str | Path,
    outdir: str | Path,
    method: str = DEFAULT_METHOD,
    *,
    datasets: Iterable[str] | None = None,
    ext: str = ".png",
    overwrite: bool = False,
    align: str = "none",
    index_maps: bool = False,
    progress: bool = True,
    method_options: dict | None = None,
    align_options: dict | None = None,
    upstream: bool = False,
    reverse: bool = False,
    warmup: int = 0,
) -> list[dict]:
    """Fuse every pair of ``<root>/<dataset>/{A,B}/`` into ``<outdir>/<dataset>/<name><ext>`` (options as
    :func:`fuse_dataset`)."""
    scenes = [(pr.dataset, pr.scene, [pr.a, pr.b]) for pr in find_pair_scenes(root, datasets)]
    return _fuse_many(
        scenes,
        outdir,
        method,
        ext=ext,
        index_maps=index_maps,
        overwrite=overwrite,
        align=align,
        progress=progress,
        method_options=method_options,
        align_options=align_options,
        upstream=upstream,
        reverse=reverse,
        warmup=warmup,
    )


def _fuse_many(
    scenes: list[tuple[str, str, object]],
    outdir: str | Path,
    method: str,
    *,
    ext: str,
    index_maps: bool,
    overwrite: bool,
    align: str,
    progress: bool,
    method_options: dict | None,
    align_options: dict | None,
    upstream: bool = False,
    reverse: bool = False,
    warmup: int = 0,
) -> list[dict]:
    """Fuse ``(dataset, scene, inputs)`` into ``<outdir>/<dataset>/<scene><ext>`` (index maps in
    ``<outdir>/<dataset>/index_maps/``) with one progress bar."""
    fm = get_fusion_method(method)  # an unknown method fails before the first stack
    summaries = []
    warmed: set[str] = set()
    for dataset, scene, inputs in _progress(scenes, f"fuse {method}", progress):
        folder = Path(outdir) / dataset
        if warmup > 0 and dataset not in warmed:  # untimed passes on the dataset's first stack
            warmed.add(dataset)
            st = load_stack(inputs, compact=fm.learned)
            for _ in range(warmup):
                fuse_loaded(st, method, align=align, method_options=method_options, align_options=align_options)
            del st
        up = (
            {n: folder / n / (scene + (".npy" if n == "depth_index" else ".png")) for n in UPSTREAM_OUTPUTS}
            if upstream
            else False
        )
        s = fuse_to_file(
            inputs,
            folder / f"{scene}{ext}",
            method,
            index_map=folder / "index_maps" / f"{scene}.png" if index_maps else None,
            overwrite=overwrite,
            align=align,
            method_options=method_options,
            align_options=align_options,
            upstream=up,
            reverse=reverse,
        )
        summaries.append({"dataset": dataset, "scene": scene, **s})
    return summaries
