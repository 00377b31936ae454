"""``stackmff extract``, ``stackmff depth`` and ``stackmff synthesize``: the training-data commands."""

from __future__ import annotations

import argparse
import json

from ..errors import StackMFFError


def _extract(args: argparse.Namespace) -> int:
    from ..data.extract import extract_dataset

    stats = extract_dataset(args.dataset, args.source, args.out, seed=args.seed)
    print(json.dumps({"dataset": args.dataset, **stats}) if args.json else f"{args.dataset}: {stats}")
    return 0


def _depth(args: argparse.Namespace) -> int:
    from ..data.depth import estimate_depth

    stats = estimate_depth(
        args.images,
        args.out,
        checkpoint=args.checkpoint,
        batch_size=args.batch_size,
        device=args.device,
        dtype=args.dtype,
        progress=not args.no_progress,
    )
    print(json.dumps(stats) if args.json else f"depth: {stats}")
    return 0


def _synthesize(args: argparse.Namespace) -> int:
    from ..data.writer import SynthesisConfig, write_stack_dataset

    if args.source is None and not args.count:
        raise StackMFFError("pass --count N for procedural scenes, or --source DIR with images/ and depth/")
    cfg = SynthesisConfig(
        mode=args.mode,
        n_range=(args.min_layers, args.max_layers),
        layers=tuple(args.layers or ()),
        shuffle=not args.ordered,
        invalid_prob=args.invalid_prob,
        max_invalid=args.max_invalid,
        breathing=args.breathing,
        exposure_jitter=args.exposure_jitter,
        size=(args.size, args.size),
        ext=args.ext if args.ext.startswith(".") else f".{args.ext}",
    )
    stats = write_stack_dataset(
        args.out,
        args.dataset,
        split=args.split,
        source=args.source,
        count=args.count,
        config=cfg,
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
    )
    summary = {"written": stats["written"], "skipped": stats["skipped"]}
    print(json.dumps(summary) if args.json else f"{args.dataset}/{args.split}: {summary}")
    return 0


def _photos(args: argparse.Namespace) -> int:
    from ..data.photos import collect_photos

    folders = {}
    for item in args.folder or []:
        name, sep, rest = item.partition("=")
        folder, sep2, licence = rest.partition(":")
        if not sep or not sep2 or not name or not folder or not licence:
            raise StackMFFError(f"--folder must look like NAME=DIR:LICENCE, got {item!r}")
        folders[name] = (folder, licence)
    man = collect_photos(args.out, args.sources, folders=folders, max_side=args.max_side, overwrite=args.overwrite)
    summary = {"out": args.out, "count": man["count"]}
    print(json.dumps(summary) if args.json else f"photos: {summary}")
    return 0


def _extract_arguments(p: argparse.ArgumentParser) -> None:
    from ..data.extract import DATASETS  # imports stackmff.data: only when `extract` is parsed

    p.add_argument("dataset", choices=tuple(DATASETS), help="which dataset")
    p.add_argument("source", help="the official archive, a folder holding it, or the unpacked folder")
    p.add_argument("out", help="output root")
    p.add_argument("--seed", type=int, default=0, help="NYU test-split seed")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")


def register(sub: argparse._SubParsersAction) -> None:
    from . import defer_arguments

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = sub.add_parser(
        "extract",
        help="extract training images (+ NYU depth) from an official dataset download",
        formatter_class=fmt,
        description="Reads the official folder/zip/tar layout and writes <out>/<DATASET>/images (and depth for NYU).",
    )
    defer_arguments(p, _extract_arguments)
    p.set_defaults(func=_extract)

    p = sub.add_parser(
        "depth",
        help="Depth Anything V2 depth for a folder of images (local checkpoint)",
        formatter_class=fmt,
        description="Writes <out>/<stem>.png 16-bit relative depth (larger = nearer); skips images already done.",
    )
    p.add_argument("images", help="folder of images")
    p.add_argument("out", help="output folder")
    p.add_argument("--checkpoint", required=True, help="local Depth Anything V2 checkpoint folder (save_pretrained)")
    perf = p.add_argument_group("performance")
    perf.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    perf.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    perf.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), help="default: half precision on GPU")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=_depth)

    p = sub.add_parser(
        "photos",
        help="write a photo bank (training scenes with natural image statistics) with its licence list",
        formatter_class=fmt,
        description="Writes <out>/<source>/<name>.png, LICENSES.md and manifest.json from pip-installed sample "
        "photographs (scikit-image, matplotlib) and optional folders (e.g. Debian wallpaper packages).",
    )
    p.add_argument("out", help="folder to create")
    p.add_argument(
        "--sources", nargs="*", default=["skimage", "matplotlib"], help="built-in sources (skimage, matplotlib)"
    )
    p.add_argument(
        "--folder",
        action="append",
        metavar="NAME=DIR:LICENCE",
        help="extra folder of images and its licence, repeatable (check /usr/share/doc/<pkg>/copyright first)",
    )
    p.add_argument("--max-side", type=int, default=1024, help="longest side of the stored photographs")
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=_photos)

    p = sub.add_parser(
        "synthesize",
        help="write synthetic focal stacks in the upstream layout",
        formatter_class=fmt,
        description="Writes <out>/<DATASET>/<split>/{focus_stack,focus_index_gt,AiF,depth}; resumes an interrupted run.",
    )
    p.add_argument("out", help="dataset root")
    src = p.add_argument_group("scenes")
    src.add_argument("--dataset", default="Procedural", help="dataset folder name")
    src.add_argument("--split", choices=("TR", "TE"), default="TR", help="split folder")
    src.add_argument("--source", help="extracted folder with images/ and depth/ (default: procedural scenes)")
    src.add_argument("--count", type=int, help="number of scenes (procedural: required)")
    src.add_argument("--size", type=int, default=256, help="procedural scene size; longest side cap for images")
    syn = p.add_argument_group("synthesis")
    syn.add_argument("--mode", choices=("upstream", "physical"), default="upstream", help="defocus model")
    syn.add_argument("--min-layers", type=int, default=2, help="smallest N")
    syn.add_argument("--max-layers", type=int, default=24, help="largest N")
    syn.add_argument("--layers", type=int, nargs="+", help="cycle through these N instead (e.g. 8 12 16 20 24)")
    syn.add_argument("--ordered", action="store_true", help="keep layers in focus order (V2/star data)")
    syn.add_argument("--invalid-prob", type=float, default=0.0, help="probability of injecting invalid layers")
    syn.add_argument("--max-invalid", type=int, default=2, help="most invalid layers per stack")
    syn.add_argument("--breathing", type=float, default=0.0, help="physical: magnification change across focus")
    syn.add_argument("--exposure-jitter", type=float, default=0.0, help="physical: per-layer log-gain jitter")
    o = p.add_argument_group("output")
    o.add_argument("--ext", default=".jpg", help="layer/AiF file type (.jpg as upstream, .png lossless)")
    o.add_argument("--seed", type=int, default=0, help="base seed (scene i uses [seed, i])")
    o.add_argument("--workers", type=int, default=1, help="processes")
    o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    o.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=_synthesize)
