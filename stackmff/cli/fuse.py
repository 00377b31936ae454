"""``stackmff fuse``, ``fuse-dataset``, ``fuse-pairs`` and ``methods``."""

from __future__ import annotations

import argparse
import json
import sys

import yaml

from ..errors import StackMFFError
from ..fusion import DEFAULT_METHOD, list_methods

ALIGN_CHOICES = ("auto", "none", "translation", "similarity", "affine", "homography")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` only where there is a default worth showing and the help does not already say it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or "(default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parse_options(pairs: list[str] | None) -> dict:
    opts: dict = {}
    for item in pairs or []:
        if "=" not in item:
            raise StackMFFError(f"--option must look like KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if not key:
            raise StackMFFError(f"--option must look like KEY=VALUE, got {item!r}")
        try:
            opts[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise StackMFFError(f"cannot read the value of -O {item!r}; quote text or write a plain number") from None
    return opts


def _method_options(args: argparse.Namespace) -> dict:
    """The ``-O`` options plus --weights/--device/--memory-budget, checked against the method before any work."""
    from ..fusion import get_fusion_method

    fm = get_fusion_method(args.method)
    opts = _parse_options(args.option)
    for flag, key in (
        ("weights", "weights"),
        ("device", "device"),
        ("memory_budget", "memory_budget_mb"),
        ("threads", "threads"),
    ):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if key not in fm.option_names():
            raise StackMFFError(
                f"--{flag.replace('_', '-')} applies to the learned methods only; {args.method} does not use it "
                "(drop it, or choose --method stackmff_v3)"
            )
        opts[key] = value
    if getattr(args, "preset", "default") != "default":
        if args.method not in ("stackmff_v3", "stackmff_v3_star"):
            raise StackMFFError(
                f"--preset {args.preset} needs -m stackmff_v3 or -m stackmff_v3_star, not {args.method}"
            )
        opts["preset"] = args.preset
    return fm.check_options(opts)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _align(args: argparse.Namespace) -> str:
    # upstream does not register layers: --preset upstream turns the automatic alignment off
    return "none" if getattr(args, "preset", "default") == "upstream" and args.align == "auto" else args.align


def _add_common(p: argparse.ArgumentParser, *, single: bool) -> None:
    g = p.add_argument_group("fusion")
    g.add_argument("-m", "--method", default=DEFAULT_METHOD, help="fusion method (see `stackmff methods`)")
    g.add_argument("-O", "--option", action="append", metavar="KEY=VALUE", help="method option, repeatable")
    g.add_argument(
        "--weights",
        help="checkpoint for learned methods (default: the shipped weights); also the author's upstream .pth "
        "(stackmffv3.pth with -m stackmff_v3, stackmffv3_star.pth with -m stackmff_v3_star)",
    )
    g.add_argument(
        "--preset",
        choices=("default", "upstream"),
        default="default",
        help="upstream = the author's inference step by step (OpenCV gray, resize to a multiple of 32, fp32, argmax, "
        "hard gather; no outlier rejection, no pyramid blend, no alignment unless --align is given)",
    )
    a = p.add_argument_group("alignment")
    a.add_argument(
        "--align",
        choices=ALIGN_CHOICES,
        default="auto",
        help="register layers before fusing; auto leaves registered stacks untouched, distrusts invalid frames and "
        "picks similarity/affine/homography by the measured residuals",
    )
    from .align import add_alignment_options

    add_alignment_options(a, per_stack=single)
    perf = p.add_argument_group("performance")
    perf.add_argument("--device", help="torch device for learned methods (default: cuda if available, else cpu)")
    perf.add_argument(
        "--memory-budget",
        type=_positive_int,
        metavar="MB",
        help="memory of the learned methods' network tiles in MB (default: from the image size and the free "
        "memory); the whole command's peak is about libraries + stack (8/16-bit; when layers are warped, the "
        "aligned copy in the files' bit depth replaces it) + output + this budget + 1 byte per layer-pixel (default "
        "pyramid gather), and a stack whose estimate exceeds the free memory is refused before fusing",
    )
    perf.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="CPU threads for learned methods (default: the cores no other process is busy on)",
    )
    o = p.add_argument_group("output")
    o.add_argument("--overwrite", action="store_true", help="replace existing output files")
    o.add_argument("--json", action="store_true", help="print a machine-readable summary on stdout")
    if single:
        o.add_argument(
            "--index-map", metavar="PATH", help="also write the source-layer index map (16-bit PNG + preview)"
        )
        o.add_argument("--bit-depth", type=int, choices=(8, 16), help="output bit depth (default: that of the input)")
        o.add_argument(
            "--upstream-outputs",
            action="store_true",
            help="also write the upstream scripts' images beside OUTPUT: OUT_fused_gray.png, OUT_focus_indices.png "
            "(8-bit scaled), OUT_focus_colormap.png (rainbow); V3-star adds depth_map/depth_colormap/depth_index.npy",
        )
    else:
        o.add_argument("--ext", default=".png", help="extension of the fused images")
        o.add_argument(
            "--index-maps", action="store_true", help="also write OUTDIR/<dataset>/index_maps/<scene>.png (+ preview)"
        )
        o.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        o.add_argument(
            "--upstream-outputs",
            action="store_true",
            help="also write the upstream scripts' images to OUTDIR/<dataset>/{fused_gray,focus_indices,"
            "focus_colormap}/<scene>.png (V3-star: also depth_map, depth_colormap, depth_index)",
        )
        o.add_argument(
            "--warmup",
            type=int,
            default=0,
            metavar="K",
            help="fuse each dataset's first stack K times untimed before timing (upstream: 3); prints mean times",
        )
    o.add_argument(
        "--reverse",
        action="store_true",
        help="with --upstream-outputs: index -> N-1-index and depth -> 1-depth (upstream star scripts' --reverse)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    fmt = _HelpFormatter
    p = sub.add_parser("fuse", help="fuse one focal stack into an all-in-focus image", formatter_class=fmt)
    io = p.add_argument_group("input/output")
    io.add_argument("inputs", nargs="+", metavar="INPUT", help="a folder of layers, image files, or a multi-page TIFF")
    io.add_argument("-o", "--output", required=True, help="fused image (.png/.jpg/.tif; 16-bit input gives 16-bit)")
    _add_common(p, single=True)
    p.set_defaults(func=_cmd_fuse)

    for name, what, func in (
        ("fuse-dataset", "every stack of ROOT/<dataset>/dof_stack/<scene>/", _cmd_fuse_dataset),
        ("fuse-pairs", "every pair of ROOT/<dataset>/{A,B}/", _cmd_fuse_pairs),
    ):
        q = sub.add_parser(name, help=f"fuse {what}", formatter_class=fmt)
        io = q.add_argument_group("input/output")
        io.add_argument("root", metavar="ROOT", help="benchmark root folder")
        io.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="writes OUTDIR/<dataset>/<scene><ext>")
        io.add_argument("--datasets", nargs="+", help="only these datasets (default: all found)")
        _add_common(q, single=False)
        q.set_defaults(func=func)

    m = sub.add_parser("methods", help="list the fusion methods", formatter_class=fmt)
    m.add_argument("--json", action="store_true", help="machine-readable list")
    m.set_defaults(func=_cmd_methods)


def _emit(args: argparse.Namespace, summary) -> None:
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")


def _cmd_fuse(args: argparse.Namespace) -> int:
    from ..fusion.run import fuse_to_file
    from .align import alignment_options

    summary = fuse_to_file(
        args.inputs,
        args.output,
        args.method,
        index_map=args.index_map,
        overwrite=args.overwrite,
        align=_align(args),
        bit_depth=args.bit_depth,
        method_options=_method_options(args),
        align_options=alignment_options(args),
        upstream=args.upstream_outputs,
        reverse=args.reverse,
    )
    _emit(args, summary)
    if not args.json:
        print(
            f"wrote {args.output} ({summary['layers']} layers, {args.method}, {summary['seconds']:.2f} s)",
            file=sys.stderr,
        )
    return 0


def _cmd_fuse_dataset(args: argparse.Namespace) -> int:
    return _cmd_fuse_tree(args, "stack")


def _cmd_fuse_pairs(args: argparse.Namespace) -> int:
    return _cmd_fuse_tree(args, "pair")


def _cmd_fuse_tree(args: argparse.Namespace, kind: str) -> int:
    """``fuse-dataset`` / ``fuse-pairs`` (:func:`stackmff.benchmark.fuse_tree` over the stacks or the pairs).
    Finished scenes are skipped (resume), failed ones are listed in one line at the end (exit 2) after the others
    were fused."""
    from ..benchmark import fuse_tree, raise_for_failures
    from ..errors import PartialFailure
    from .align import alignment_options

    run = fuse_tree(
        args.root,
        args.output,
        args.method,
        kinds=(kind,),
        datasets=args.datasets,
        ext=args.ext,
        overwrite=args.overwrite,
        align=_align(args),
        index_maps=args.index_maps,
        progress=not args.no_progress,
        method_options=_method_options(args),
        align_options=alignment_options(args),
        upstream=args.upstream_outputs,
        reverse=args.reverse,
        warmup=args.warmup,
    )
    records = run["scenes"]
    try:
        raise_for_failures(run)
    except PartialFailure:
        _emit(args, records)
        raise
    _emit(args, records)
    if not args.json:
        done = [s for s in records if s["status"] == "ok"]
        seconds = sum(s["seconds"] for s in done)
        skipped = len(records) - len(done)
        note = f"; skipped {skipped} finished (--overwrite redoes them)" if skipped else ""
        print(f"fused {len(done)} scenes into {args.output} ({args.method}, {seconds:.1f} s){note}", file=sys.stderr)
        if args.warmup:  # upstream's per-dataset timing (scenes fused in this run)
            for ds in dict.fromkeys(s["dataset"] for s in done):
                rows = [s for s in done if s["dataset"] == ds and "fuse_seconds" in s]
                if not rows:
                    continue
                line = f"{ds}: {sum(s['fuse_seconds'] for s in rows) / len(rows):.4f} s fusion per stack"
                if all("network_seconds" in s for s in rows):
                    line += f", {sum(s['network_seconds'] for s in rows) / len(rows):.4f} s network"
                print(line, file=sys.stderr)
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from ..fusion.stackmff_v3 import needs_weights

    methods = list_methods()
    if args.json:
        json.dump(
            [
                {
                    "name": m.name,
                    "description": m.description,
                    "learned": m.learned,
                    "needs_weights": needs_weights(m.name),
                }
                for m in methods
            ],
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
        return 0
    width = max((len(m.name) for m in methods), default=0)
    for m in methods:
        mark = " (default)" if m.name == DEFAULT_METHOD else ""
        if needs_weights(m.name):
            mark += " (no shipped weights: needs --weights)"
        print(f"{m.name:<{width}}  {m.description}{mark}")
    return 0
