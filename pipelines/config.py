"""Typed views of ``params.yaml``: one frozen dataclass per stage section, loaded strictly.

Every section of ``params.yaml`` maps to a dataclass below; :func:`load_params` builds it and fails with the full
key name on a typo (``params.yaml: unknown key fuse.methds; known keys under fuse: ...``), a missing required key or
a value of the wrong type. Stage scripts read only their own section, and ``dvc.yaml`` tracks only those keys.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from stackmff.errors import StackMFFError

__all__ = [
    "SECTIONS",
    "BaseParams",
    "DepthParams",
    "EvaluateParams",
    "ExtractParams",
    "FlowsParams",
    "FuseParams",
    "PhotosParams",
    "PrepareParams",
    "ReportParams",
    "SplitParams",
    "SynthesizeParams",
    "TrainParams",
    "load_params",
    "load_yaml",
]

T = TypeVar("T")


@dataclass(frozen=True)
class BaseParams:
    """``base:``: settings shared by several stages."""

    seed: int = 0


@dataclass(frozen=True)
class PrepareParams:
    """``prepare:``: turning the bundled sample stacks into a benchmark tree."""

    dataset: str = "samples"  # dataset name the bundled stacks get inside the tree
    max_side: int = 0  # longest image side after (area) downscaling; 0 keeps the original size
    # benchmark name -> source folder (read by dvc.yaml, not by the script): the bundled stacks, or a benchmark
    # root <root>/<dataset>/dof_stack|image stack/<scene>/ or <root>/<dataset>/{A,B}/ copied into data/benchmarks/
    sources: dict[str, str] = field(default_factory=lambda: {"samples": "data/samples"})


@dataclass(frozen=True)
class PhotoFolder:
    """One extra folder of photographs for the photo bank, with the licence that allows training on it."""

    path: str = ""  # e.g. /usr/share/wallpapers (Debian plasma-workspace-wallpapers)
    licence: str = ""  # as stated in /usr/share/doc/<package>/copyright or the files' metadata
    include: list[str] = field(default_factory=list)  # sub-folders / files to take (empty: all), e.g. the photographs


@dataclass(frozen=True)
class PhotosParams:
    """``photos:``: the photo bank of natural-image training scenes (``stackmff.data.photos``)."""

    sources: list[str] = field(default_factory=lambda: ["skimage", "matplotlib"])  # pip-installed sample photos
    folders: dict[str, PhotoFolder] = field(default_factory=dict)  # name -> extra folder (non-default profiles)
    max_side: int = 1024  # longest side of the stored photographs


@dataclass(frozen=True)
class ExtractParams:
    """``extract:``: raw training datasets under ``data/raw/<name>/``; absent ones are skipped."""

    datasets: list[str] = field(default_factory=list)  # names of stackmff.data.extract.DATASETS
    seed: int = 0  # NYU Depth V2: seed of the held-out test split
    nyu_test_count: int = 100  # NYU Depth V2: images held out for testing (upstream: 100)


@dataclass(frozen=True)
class DepthParams:
    """``depth:``: Depth Anything V2 for images without a depth map."""

    checkpoint: str = ""  # local save_pretrained folder of Depth Anything V2 (never downloaded); needed only when
    # an extracted dataset has images without depth
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", ...
    dtype: str = "float32"  # float32 / float16 / bfloat16 (half precision on GPU)
    batch_size: int = 4


@dataclass(frozen=True)
class SplitParams:
    """One synthesised split (``synthesize.benchmark`` or ``synthesize.train``)."""

    source: str = "procedural"  # "procedural", "photos" (dead-leaves photo scenes from the photos stage) or
    # "extracted" (images + depth from the extract/depth stages)
    scenes: int = 8  # stacks to write (per source dataset when source is "extracted")
    size: int = 256  # side of the square procedural scene / random crop of an extracted image
    layers: list[int] = field(default_factory=lambda: [4, 8])  # N values, cycled over the stacks
    mode: str = "physical"  # "physical" (thin lens, occlusion, noise) or "upstream" (StackMFF make_dataset.py)
    ordered: bool = True  # keep layers in focus order (False shuffles them, as upstream V3 data)
    datasets: dict[str, int] = field(default_factory=lambda: {"procedural": 0})  # name -> invalid layers per stack
    seed: int = 0  # added to base.seed, so benchmark and training scenes never coincide


@dataclass(frozen=True)
class SynthesizeParams:
    """``synthesize:``: held-out benchmark stacks with ground truth and the training set."""

    benchmark: SplitParams = field(default_factory=SplitParams)
    train: SplitParams = field(default_factory=SplitParams)


@dataclass(frozen=True)
class TrainParams:
    """``train:``: one entry per trained variant (``stackmff_v3``, ``stackmff_v3_star``).

    Each entry holds keys of :class:`stackmff.models.train.TrainConfig` (checked strictly by the train stage); the
    paths ``out_dir``, ``init_from`` and ``data`` come from ``dvc.yaml``, not from here.
    """

    variants: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class FuseParams:
    """``fuse:``: which methods run on which benchmarks, and their options."""

    methods: list[str] = field(default_factory=list)  # registered methods and external tools (no model files)
    learned: list[str] = field(default_factory=list)  # registered methods that load the trained checkpoint
    upstream: list[str] = field(default_factory=list)  # learned methods also run as <method>_upstream (preset upstream)
    imported: list[str] = field(default_factory=list)  # results imported from data/imported/<method>/
    benchmarks: list[str] = field(default_factory=list)  # folders under data/benchmarks/
    align: dict[str, str] = field(default_factory=dict)  # benchmark -> "none" or an alignment mode
    index_maps: bool = True  # also save index maps of methods that have them (shown in the report)
    options: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> keyword options / adapter keys


@dataclass(frozen=True)
class EvaluateParams:
    """``evaluate:``: metrics computed for every fused image."""

    metrics: list[str] = field(default_factory=list)  # empty: every metric applicable to the benchmark
    on_size_mismatch: str = "register"  # fused size differs from the sources (aligned + cropped): register/skip/error


@dataclass(frozen=True)
class ReportParams:
    """``report:``: tables, plots and the HTML page."""

    title: str = "StackMFF V3 benchmark"
    metrics: list[str] = field(default_factory=list)  # table columns, in order; empty: all evaluated
    lower_is_better: list[str] = field(default_factory=list)  # metrics where smaller wins (errors, NIQE...)
    primary: dict[str, str] = field(default_factory=dict)  # benchmark -> metric used by the scatter plots
    headline: list[str] = field(default_factory=lambda: ["psnr", "ssim"])  # DVC metrics (else the primary metric)
    default_method: str = "stackmff_v3"  # paired per-scene differences are taken against this method
    crop: int = 160  # side of the crops shown per scene
    max_scenes: int = 12  # scenes shown with crops (the rest only in tables)


@dataclass(frozen=True)
class FlowsParams:
    """``flows:``: Prefect orchestration (not read by any DVC stage)."""

    task_runner: str = "threads"  # "threads" or "dask" (process parallelism for CPU-bound baselines)
    workers: int = 2  # threads, or the workers of the local Dask cluster (ignored with dask_address)
    dask_address: str = ""  # "tcp://host:8786": run the tasks on this existing Dask cluster instead of a local one
    cron: str = "0 3 * * *"  # schedule of the regenerate deployment
    publish_dir: str = ""  # where the regenerate flow copies reports/ ("" = no copy, only a Prefect artifact)


@dataclass(frozen=True)
class BenchParams:
    """``bench:``: the whole-command benchmark grid (``pipelines/benchmarks/grid.py``, stage ``bench``)."""

    methods: list[str] = field(default_factory=list)  # empty: every registered method + installed external tools
    layers: list[int] = field(default_factory=lambda: [3, 8])  # N values
    megapixels: list[float] = field(default_factory=lambda: [0.25, 1.0])  # megapixels per layer
    repeats: int = 1  # runs per cell (median)
    max_seconds: float = 120.0  # a method's larger cells are skipped once one took longer than this
    devices: list[str] = field(default_factory=lambda: ["auto"])  # learned methods: auto = cpu (+ cuda if present)


SECTIONS: dict[str, type] = {
    "base": BaseParams,
    "prepare": PrepareParams,
    "photos": PhotosParams,
    "extract": ExtractParams,
    "depth": DepthParams,
    "synthesize": SynthesizeParams,
    "train": TrainParams,
    "fuse": FuseParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
    "flows": FlowsParams,
    "bench": BenchParams,
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping raises :class:`StackMFFError`."""
    path = Path(path)
    if not path.is_file():
        raise StackMFFError(f"params file not found: {path}; run from the repository root or pass --params")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise StackMFFError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def load_params(path: str | Path, section: str) -> Any:
    """Load one section of a params file into its dataclass.

    Args:
        path: the YAML file (``params.yaml``).
        section: a key of :data:`SECTIONS`.

    Returns:
        The section's frozen dataclass.

    Raises:
        StackMFFError: unknown section, unknown or mistyped key (named in full, e.g. ``fuse.methds``).
    """
    if section not in SECTIONS:
        raise StackMFFError(f"unknown params section {section!r}; use one of {', '.join(SECTIONS)}")
    data = load_yaml(path)
    return build(SECTIONS[section], data.get(section) or {}, section, source=str(path))


def build(cls: type[T], data: Mapping[str, Any], prefix: str, *, source: str = "params.yaml") -> T:
    """Build dataclass ``cls`` from ``data`` strictly; ``prefix`` names the section in error messages."""
    if not isinstance(data, Mapping):
        raise StackMFFError(f"{source}: {prefix} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise StackMFFError(
            f"{source}: unknown key {prefix}.{unknown[0]}; known keys under {prefix}: {', '.join(names)}"
        )
    values = {k: _convert(hints[k], v, f"{prefix}.{k}", source) for k, v in data.items()}
    return cls(**values)


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value or {}, key, source=source)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        return _convert(tp, value, key, source)
    if tp is Any:
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise StackMFFError(f"{source}: {key} must be a list, got {value!r}")
        args = typing.get_args(tp)
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        if len(items) != len(value):
            raise StackMFFError(f"{source}: {key} must have {len(items)} values, got {value!r}")
        return tuple(_convert(t, v, f"{key}[{i}]", source) for i, (t, v) in enumerate(zip(items, value)))
    if origin is list:
        if not isinstance(value, list):
            raise StackMFFError(f"{source}: {key} must be a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise StackMFFError(f"{source}: {key} must be a mapping, got {value!r}")
        _, item = typing.get_args(tp)
        return {str(k): _convert(item, v, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise StackMFFError(f"{source}: {key} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StackMFFError(f"{source}: {key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StackMFFError(f"{source}: {key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise StackMFFError(f"{source}: {key} must be a string, got {value!r}")
        return value
    return value
