"""Fusing a benchmark tree with one method: every scene, one record per scene, one run summary.

One code path for ``stackmff fuse-dataset`` / ``fuse-pairs``, the DVC ``fuse`` stages and the Prefect benchmark
flow. A method is one of three kinds (:func:`method_kind`):

- ``registered``: a method of :mod:`stackmff.fusion` (classical or learned), run exactly as ``stackmff fuse`` runs
  it (:func:`stackmff.fusion.run.fuse_to_file`: learned methods read a compact 8/16-bit stack), so the time and
  memory in a run summary are those of the command users run;
- ``external``: an installed tool of :mod:`stackmff.peers` (enfuse, focus-stack ...); not installed = ``absent``;
- ``imported``: results made elsewhere, ``<imported>/<dataset>/<scene>.<ext>`` re-encoded as ours.

Per scene the record holds ``dataset, scene, status`` (``ok``, ``skipped`` = already fused, ``failed`` with
``error``, ``missing`` = no imported result), and for fused scenes ``layers, height, width, seconds`` (the whole
scene: load + align + fuse + save; external tools: the tool's run), ``peak_mb`` (peak resident memory added by the
scene; external tools: their largest child process) and, for registered methods, ``load_seconds``,
``align_seconds``, ``fuse_seconds`` and the outputs written.
"""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import PartialFailure, StackMFFError
from ..io import IMAGE_EXTENSIONS, check_writable_folder, collect_files, load_stack, save_image
from .memory import PeakMemory
from .scenes import KINDS, Scene, SceneKind, find_scenes

__all__ = ["external_tool", "fuse_scene", "fuse_tree", "method_kind", "raise_for_failures"]

log = logging.getLogger("stackmff")


def method_kind(method: str, *, imported: str | os.PathLike | None = None) -> str:
    """``"imported"`` (when ``imported`` is given), ``"external"`` or ``"registered"``.

    Raises:
        StackMFFError: not an external tool and not a registered method (the message lists the known names).
    """
    from ..peers import list_peers

    if imported is not None:
        return "imported"
    if method in {p.name for p in list_peers()}:
        return "external"
    from ..fusion import get_fusion_method

    get_fusion_method(method)
    return "registered"


def external_tool(method: str, options: dict[str, Any] | None = None):
    """The adapter of external tool ``method`` with ``options`` (e.g. ``fuse.options.<method>``) applied."""
    from ..peers import get_peer, tool_from_config

    base = get_peer(method)
    return tool_from_config(method, options, base=base) if options else base


def _rounded(x: float | None, digits: int = 1) -> float | None:
    return None if x is None or x != x else round(float(x), digits)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def fuse_scene(
    scene: Scene,
    out: str | os.PathLike,
    method: str,
    *,
    kind: str = "registered",
    ext: str = ".png",
    align: str = "none",
    method_options: dict[str, Any] | None = None,
    align_options: dict[str, Any] | None = None,
    index_maps: bool = False,
    upstream: bool = False,
    reverse: bool = False,
    overwrite: bool = False,
    imported: str | os.PathLike | None = None,
    tool=None,
) -> dict[str, Any]:
    """Fuse one scene into ``scene.output(out, ext)`` and return its record (see the module docstring).

    Args:
        scene: the scene.
        out: output root of this method (``<out>/<dataset>/<scene><ext>``).
        method: method name.
        kind: from :func:`method_kind`.
        ext: image extension of the fused result.
        align: alignment mode (``"none"`` skips it); an external tool runs its own alignment steps unless ``"none"``.
        method_options: keyword options of a registered method.
        align_options: :func:`stackmff.align.align_stack` keywords.
        index_maps: also ``<out>/<dataset>/index_maps/<scene>.png`` (+ preview) for methods that pick layers.
        upstream: also the upstream scripts' outputs ``<out>/<dataset>/<name>/<scene>.png``; ``reverse`` flips them.
        overwrite: replace existing outputs (else an existing result fails the scene).
        imported: ``<results>/<method>`` folder of an imported method.
        tool: the external tool's adapter (default: :func:`external_tool` of ``method``).

    Raises:
        StackMFFError, OSError, MemoryError: the scene cannot be fused (:func:`fuse_tree` records them).
    """
    target = scene.output(out, ext)
    record: dict[str, Any] = {"dataset": scene.dataset, "scene": scene.scene}
    if kind == "imported":
        from ..peers import ImportedResults

        written = ImportedResults(Path(imported or ".")).copy_to(
            scene.dataset, scene.scene, target, overwrite=overwrite
        )
        record.update(status="ok" if written else "missing", seconds=None, load_seconds=None, peak_mb=None)
        if written:
            from ..io import load_image

            img, _ = load_image(written)
            record.update(height=int(img.shape[1]), width=int(img.shape[2]))
        return record
    if kind == "external":
        tool = tool or external_tool(method)
        files = collect_files(list(scene.inputs))
        run = tool.fuse_files(files, align=align != "none")
        save_image(target, run.image, bit_depth=run.bit_depth, overwrite=overwrite)
        _, h, w = run.image.shape
        record.update(
            status="ok", layers=len(files), height=h, width=w, seconds=round(run.seconds, 4), load_seconds=None
        )
        record.update(peak_mb=_rounded(run.peak_mb), outputs=[str(target)])
        return record
    from ..fusion.run import UPSTREAM_OUTPUTS, fuse_to_file

    folder = target.parent
    up = (
        {n: folder / n / (scene.scene + (".npy" if n == "depth_index" else ".png")) for n in UPSTREAM_OUTPUTS}
        if upstream
        else False
    )
    with PeakMemory() as mem:
        summary = fuse_to_file(
            list(scene.inputs),
            target,
            method,
            index_map=folder / "index_maps" / f"{scene.scene}.png" if index_maps else None,
            overwrite=overwrite,
            align=align,
            method_options=method_options,
            align_options=align_options,
            upstream=up,
            reverse=reverse,
        )
    record.update(status="ok", **summary)
    record["peak_mb"] = _rounded(mem.peak_mb)
    return record


def _progress(items: list, desc: str, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="stack")


def fuse_tree(
    root: str | os.PathLike,
    out: str | os.PathLike,
    method: str,
    *,
    kinds: Sequence[SceneKind] = KINDS,
    datasets: Iterable[str] | None = None,
    ext: str = ".png",
    overwrite: bool = False,
    align: str = "none",
    index_maps: bool = False,
    method_options: dict[str, Any] | None = None,
    align_options: dict[str, Any] | None = None,
    upstream: bool = False,
    reverse: bool = False,
    warmup: int = 0,
    imported: str | os.PathLike | None = None,
    label: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Fuse every scene of the benchmark tree ``root`` into ``<out>/<dataset>/<scene><ext>`` and summarise the run.

    Finished scenes (their fused image exists) are skipped unless ``overwrite``, so an interrupted run resumes
    where it stopped. A scene that fails (unreadable layer, too few layers, a tool error ...) does not stop the
    others: its record says ``failed`` with the error (see :func:`raise_for_failures`). An external tool that is not
    installed, or an imported method without a results folder, makes the run ``absent`` without fusing anything.

    Args:
        root: benchmark tree (:func:`~stackmff.benchmark.find_scenes`).
        out: output root of this method.
        method: registered method, external tool, or (with ``imported``) an imported method's name.
        kinds: scene layouts to fuse (``"stack"``, ``"pair"``).
        datasets: only these datasets.
        ext: extension of the fused images.
        overwrite: redo finished scenes.
        align, index_maps, method_options, align_options, upstream, reverse: as :func:`fuse_scene`; for an external
            tool ``method_options`` are adapter overrides (``fuse.options.<tool>``).
        warmup: fuse each dataset's first stack this many times, untimed, before its stacks are timed (upstream's
            timing protocol: per-dataset means leave out one-off start-up costs).
        imported: the results root; the method reads ``<imported>/<method>/<dataset>/<scene>.<ext>``.
        label: the name the run is reported under (default ``method``), e.g. ``stackmff_v3_upstream`` for
            ``stackmff_v3`` with ``preset="upstream"``: one registered method, two rows of the report.
        progress: show a progress bar.

    Returns:
        ``{"method", "kind" ("registered", "learned", "external", "imported"), "benchmark" (the root's name),
        "align", "version" (of an external tool), "host", "status" ("ok", "partial", "absent"), "scenes": [records]}``
        (+ ``"missing"``: the executables of an absent tool).

    Raises:
        StackMFFError: unknown method or bad options, bad ``ext``, ``out`` a file or not writable, no scene found.
    """
    imported_dir = Path(imported) / method if imported is not None else None
    kind = method_kind(method, imported=imported_dir)
    ext = ext if ext.startswith(".") else "." + ext
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise StackMFFError(f"--ext must be an image extension such as .png or .tif, got {ext!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StackMFFError(f"output folder {out} is a file; -o takes a folder for the fused images")
    summary: dict[str, Any] = {
        "method": label or method,
        "kind": kind,
        "benchmark": Path(root).name,
        "align": align,
        "version": None,
        "host": platform.node(),
        "status": "ok",
        "scenes": [],
    }
    tool = None
    options = dict(method_options or {})
    if label is not None and label != method:
        summary["base_method"] = method
    if kind == "registered":
        from ..fusion import get_fusion_method

        fm = get_fusion_method(method)
        options = fm.check_options(options)  # bad options fail before the first scene
        summary["kind"] = "learned" if fm.learned else "registered"
        summary["options"] = {k: v for k, v in options.items() if k != "weights"}
    elif kind == "external":
        tool = external_tool(method, options)
        summary["version"] = tool.version_string()
        if not tool.available():
            summary.update(status="absent", missing=tool.missing())
            log.warning("%s is not installed (%s): reported absent", method, ", ".join(tool.missing()))
            return summary
    elif imported_dir is not None and not imported_dir.is_dir():
        summary["status"] = "absent"
        log.warning("no imported results in %s: %s reported absent", imported_dir, method)
        return summary
    scenes = find_scenes(root, datasets, kinds=kinds)
    check_writable_folder(out, f"output folder {out}")
    warmed: set[str] = set()
    for sc in _progress(scenes, f"fuse {method}", progress):
        if not overwrite and sc.output(out, ext).is_file():  # written with its other outputs in one go: finished
            summary["scenes"].append(
                {"dataset": sc.dataset, "scene": sc.scene, "status": "skipped", "skipped": True}
                | {"outputs": [str(sc.output(out, ext))]}
            )
            continue
        log.info("%s: %s", method, sc.name)
        try:
            if warmup > 0 and kind == "registered" and sc.dataset not in warmed:
                warmed.add(sc.dataset)
                _warm_up(sc, method, warmup, align=align, method_options=options, align_options=align_options)
            rec = fuse_scene(
                sc,
                out,
                method,
                kind=kind,
                ext=ext,
                align=align,
                method_options=options,
                align_options=align_options,
                index_maps=index_maps,
                upstream=upstream,
                reverse=reverse,
                overwrite=overwrite,
                imported=imported_dir,
                tool=tool,
            )
        except (StackMFFError, OSError, MemoryError) as exc:
            log.info("%s failed on %s: %s", method, sc.name, _one_line(exc))  # the CLI says it once, at the end
            rec = {"dataset": sc.dataset, "scene": sc.scene, "status": "failed", "error": _one_line(exc)}
            rec.update(seconds=None, load_seconds=None, peak_mb=None)
        if "method" in rec:  # fuse_to_file's summary names the registered method; the run may carry a label
            rec["method"] = summary["method"]
        summary["scenes"].append(rec)
    bad = [r for r in summary["scenes"] if r["status"] not in ("ok", "skipped")]
    if bad:
        summary["status"] = "absent" if len(bad) == len(scenes) else "partial"
    return summary


def _warm_up(scene: Scene, method: str, times: int, **kwargs: Any) -> None:
    from ..fusion import get_fusion_method
    from ..fusion.run import fuse_loaded

    get_fusion_method(method)  # an unknown name fails before loading
    stack = load_stack(list(scene.inputs), compact=True)  # as fuse_to_file loads it, for every method
    for _ in range(times):
        fuse_loaded(stack, method, **kwargs)


def raise_for_failures(summary: dict[str, Any]) -> None:
    """Raise :class:`~stackmff.errors.PartialFailure` (one line naming the first three failed scenes and the fix)
    when scenes of a :func:`fuse_tree` summary failed; its ``results`` are the scene records."""
    records = summary["scenes"]
    failed = [r for r in records if r["status"] in ("failed", "missing")]
    if not failed:
        return
    done = len(records) - len(failed)
    listed = "; ".join(f"{r['dataset']}/{r['scene']}: {r.get('error', 'no imported result')}" for r in failed[:3])
    more = f"; and {len(failed) - 3} more (see --json)" if len(failed) > 3 else ""
    raise PartialFailure(
        f"{len(failed)} of {len(records)} scenes failed ({listed}{more}); the other {done} are written: "
        "fix the failed ones and rerun (finished scenes are skipped)",
        records,
    )
