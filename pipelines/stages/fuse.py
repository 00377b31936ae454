"""Stage ``fuse``: fuse every scene of one benchmark with one method; record runtime and peak memory per stack.

The method is looked up, in order, as an imported result (``--imported``), an external tool
(:mod:`stackmff.peers`) or a registered fusion method (:mod:`stackmff.fusion`). A benchmark is any tree
``<root>/<dataset>/dof_stack|image stack/<scene>/`` or ``<root>/<dataset>/{A,B}/``. Outputs:

- ``<out>/<dataset>/<scene>.png`` fused images (``<out>/<dataset>/index_maps/<scene>[_preview].png`` when the
  method picks one layer per pixel and ``fuse.index_maps`` is true);
- a runs JSON: method, kind, status (``ok``, ``partial``, ``absent``), tool version and one record per scene with
  ``layers, height, width, seconds`` (align + fuse, loading excluded), ``load_seconds`` and ``peak_mb``.

An external tool that is not installed, or an imported method without results, is reported ``absent`` (empty
output folder), never an error: the report lists it as absent.

Usage (from ``dvc.yaml``)::

    python -m pipelines.stages.fuse --params params.yaml --method focus_measure \
        data/benchmarks/samples data/fused/focus_measure/samples reports/runs/focus_measure/samples.json
"""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config import FuseParams, load_params
from pipelines.stages._common import PeakMemory, parser, run_main, write_json
from stackmff.errors import StackMFFError
from stackmff.io import IMAGE_EXTENSIONS, find_pair_scenes, find_stack_scenes, load_stack, natural_key, save_image

__all__ = ["Scene", "find_scenes", "fuse_scene", "main", "method_kind", "run"]

log = logging.getLogger("stackmff.pipelines.fuse")


@dataclass(frozen=True)
class Scene:
    """One input of a benchmark: a stack folder or an A/B pair."""

    dataset: str
    scene: str
    files: tuple[Path, ...]  # layer files in focus order

    def output(self, out: Path) -> Path:
        return out / self.dataset / f"{self.scene}.png"


def find_scenes(root: str | Path) -> list[Scene]:
    """List the scenes of a benchmark tree (stack tree first, else pair tree).

    Raises:
        StackMFFError: the folder holds neither layout.
    """
    root = Path(root)
    try:
        stacks = find_stack_scenes(root)
    except StackMFFError:
        stacks = []
    if stacks:
        return [Scene(s.dataset, s.scene, _layer_files(s.stack_dir)) for s in stacks]
    try:
        pairs = find_pair_scenes(root)
    except StackMFFError:
        pairs = []
    if pairs:
        return [Scene(p.dataset, p.scene, (p.a, p.b)) for p in pairs]
    raise StackMFFError(
        f"{root} is not a benchmark tree; expected <root>/<dataset>/dof_stack/<scene>/ or <root>/<dataset>/{{A,B}}/"
    )


def _layer_files(folder: Path) -> tuple[Path, ...]:
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return tuple(sorted(files, key=natural_key))


def method_kind(method: str, *, imported: Path | None = None) -> str:
    """``"imported"``, ``"external"`` or ``"registered"`` (raises for an unknown name)."""
    from stackmff.fusion import get_fusion_method
    from stackmff.peers import list_peers

    if imported is not None:
        return "imported"
    if method in {p.name for p in list_peers()}:
        return "external"
    get_fusion_method(method)  # raises StackMFFError listing the known names
    return "registered"


def external_tool(method: str, options: dict[str, Any]):
    """The adapter of external tool ``method`` with ``fuse.options.<method>`` overrides applied."""
    from stackmff.peers import get_peer, tool_from_config

    base = get_peer(method)
    return tool_from_config(method, options, base=base) if options else base


def fuse_scene(
    scene: Scene,
    out: Path,
    method: str,
    *,
    kind: str,
    align: str = "none",
    options: dict[str, Any] | None = None,
    index_maps: bool = True,
    imported: Path | None = None,
) -> dict[str, Any]:
    """Fuse one scene into ``scene.output(out)`` and return its run record.

    Args:
        scene: the scene.
        out: output root of this method and benchmark.
        method: method name.
        kind: from :func:`method_kind`.
        align: alignment mode for registered methods (``"none"`` to skip); for external tools any value other than
            ``"none"`` runs the tool's own alignment steps.
        options: keyword options of a registered method, or adapter overrides of an external tool.
        index_maps: save index maps of methods that produce them.
        imported: ``<results>/<method>`` folder of an imported method.

    Returns:
        ``dataset, scene, layers, height, width, seconds, load_seconds, peak_mb, status`` (+ ``error``).
    """
    options = dict(options or {})
    target = scene.output(out)
    record: dict[str, Any] = {"dataset": scene.dataset, "scene": scene.scene, "layers": len(scene.files)}
    if kind == "imported":
        from stackmff.peers import ImportedResults

        written = ImportedResults(Path(imported or ".")).copy_to(scene.dataset, scene.scene, target, overwrite=True)
        record.update(status="ok" if written else "missing", seconds=None, load_seconds=None, peak_mb=None)
        if written:
            record.update(_size(target))
        return record
    if kind == "external":
        tool = external_tool(method, options)
        try:
            run = tool.fuse_files(list(scene.files), align=align != "none")
        except StackMFFError as exc:
            record.update(status="failed", error=str(exc), seconds=None, load_seconds=None, peak_mb=None)
            log.warning("%s failed on %s/%s: %s", method, scene.dataset, scene.scene, exc)
            return record
        save_image(target, run.image, bit_depth=run.bit_depth, overwrite=True)
        _, h, w = run.image.shape
        record.update(
            status="ok", height=h, width=w, seconds=round(run.seconds, 4), load_seconds=None, peak_mb=_r(run.peak_mb)
        )
        return record

    from stackmff.fusion.run import fuse_loaded, save_index_map

    t0 = time.perf_counter()
    stack = load_stack(list(scene.files))
    load_seconds = time.perf_counter() - t0
    with PeakMemory() as mem:
        t0 = time.perf_counter()
        result, info = fuse_loaded(stack, method, align=align, method_options=options)
        seconds = time.perf_counter() - t0
    save_image(target, result.image, bit_depth=stack.bit_depth, overwrite=True)
    if index_maps and result.index_map is not None:
        save_index_map(target.parent / "index_maps" / f"{scene.scene}.png", result.index_map, stack.n, overwrite=True)
    _, h, w = result.image.shape
    record.update(
        status="ok",
        layers=stack.n,
        height=h,
        width=w,
        seconds=round(seconds, 4),
        load_seconds=round(load_seconds, 4),
        peak_mb=_r(mem.peak_mb),
    )
    if "align_seconds" in info:
        record["align_seconds"] = info["align_seconds"]
    return record


def _r(x: float | None) -> float | None:
    return None if x is None or x != x else round(float(x), 1)


def _size(path: Path) -> dict[str, int]:
    from stackmff.io import load_image

    img, _ = load_image(path)
    return {"height": int(img.shape[1]), "width": int(img.shape[2])}


def run(
    params: FuseParams,
    method: str,
    benchmark: str | Path,
    out: str | Path,
    runs: str | Path,
    *,
    weights: str | Path | None = None,
    imported: str | Path | None = None,
) -> dict[str, Any]:
    """Fuse every scene of ``benchmark`` with ``method`` into ``out``; write the runs JSON to ``runs``.

    Args:
        params: the ``fuse:`` section.
        method: method name (registered, external tool or imported).
        benchmark: benchmark tree; its folder name selects ``params.align[<name>]``.
        out: output folder (created).
        runs: runs JSON file.
        weights: checkpoint folder/file of the trained model, passed to learned methods as ``weights=``.
        imported: the results root ``<results>``; the method reads ``<results>/<method>/<dataset>/<scene>.<ext>``.

    Returns:
        The runs summary that was written.
    """
    benchmark, out = Path(benchmark), Path(out)
    name = benchmark.name
    imported_dir = Path(imported) / method if imported is not None else None
    kind = method_kind(method, imported=imported_dir)
    options = dict(params.options.get(method, {}))
    if weights is not None and kind == "registered":
        options.setdefault("weights", str(weights))
    align = params.align.get(name, "none")
    scenes = find_scenes(benchmark)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "method": method,
        "kind": "learned" if weights is not None and kind == "registered" else kind,
        "benchmark": name,
        "align": align,
        "version": None,
        "host": platform.node(),
        "status": "ok",
        "scenes": [],
    }
    if kind == "external":
        tool = external_tool(method, options)
        summary["version"] = tool.version_string()
        if not tool.available():
            summary["status"] = "absent"
            summary["missing"] = tool.missing()
            log.warning("%s is not installed (%s): reported absent", method, ", ".join(tool.missing()))
            write_json(runs, summary)
            return summary
    if kind == "imported" and imported_dir is not None and not imported_dir.is_dir():
        summary["status"] = "absent"
        log.warning("no imported results in %s: %s reported absent", imported_dir, method)
        write_json(runs, summary)
        return summary
    for sc in scenes:
        log.info("%s: %s/%s (%d layers)", method, sc.dataset, sc.scene, len(sc.files))
        rec = fuse_scene(
            sc,
            out,
            method,
            kind=kind,
            align=align,
            options=options,
            index_maps=params.index_maps,
            imported=imported_dir,
        )
        summary["scenes"].append(rec)
    bad = [r for r in summary["scenes"] if r["status"] != "ok"]
    if bad:
        summary["status"] = "absent" if len(bad) == len(scenes) else "partial"
    write_json(runs, summary)
    return summary


def _main(argv: Sequence[str] | None = None) -> int:
    p = parser("fuse", "Fuse every scene of one benchmark with one method.")
    p.add_argument("--method", required=True, help="registered method, external tool or imported method name")
    p.add_argument("--weights", help="trained checkpoint for learned methods")
    p.add_argument("--imported", help="results root <results>/<method>/<dataset>/<scene>.<ext> (imported methods)")
    p.add_argument("benchmark", help="benchmark tree")
    p.add_argument("out", help="output folder of fused images")
    p.add_argument("runs", help="runs JSON (runtime, memory, status)")
    a = p.parse_args(argv)
    params: FuseParams = load_params(a.params, "fuse")
    summary = run(params, a.method, a.benchmark, a.out, a.runs, weights=a.weights, imported=a.imported)
    log.info("%s on %s: %s (%d scenes)", a.method, Path(a.benchmark).name, summary["status"], len(summary["scenes"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code."""
    return run_main(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
