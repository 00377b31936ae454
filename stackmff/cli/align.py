"""``stackmff align``: register the layers of a stack and write them, with the transforms file, to a folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import StackMFFError

TRANSFORMS_NAME = "transforms.json"


def add_alignment_options(g: argparse._ArgumentGroup, *, per_stack: bool = True) -> None:
    """Options shared by ``align``, ``fuse`` and (without the per-stack ones: transforms files, reference layer)
    ``fuse-dataset`` / ``fuse-pairs``: output frame, failed layers."""
    if per_stack:
        g.add_argument(
            "--transforms", metavar="PATH", help="apply the transforms in this file instead of estimating them"
        )
        g.add_argument("--save-transforms", metavar="PATH", help="write the transforms used to this JSON file")
    g.add_argument(
        "--align-frame",
        choices=("crop", "fill"),
        default="crop",
        help="crop to the region every layer covers, or keep the reference frame and fill from the reference layer",
    )
    g.add_argument("--drop-failed", action="store_true", help="leave out layers whose alignment failed")
    if per_stack:
        g.add_argument(
            "--align-reference",
            type=_layer_index,
            metavar="K",
            help="reference layer index (default: chosen from content)",
        )


def _layer_index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a layer index such as 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a layer index >= 0 (the first layer is 0), got {value}")
    return value


def alignment_options(args: argparse.Namespace) -> dict:
    """The ``align_stack`` keyword options the alignment arguments ask for."""
    opts: dict = {"frame": args.align_frame, "drop_failed": args.drop_failed}
    if getattr(args, "transforms", None):
        opts["transforms"] = args.transforms
    if getattr(args, "save_transforms", None):
        opts["save_transforms"] = args.save_transforms
    if getattr(args, "align_reference", None) is not None:
        opts["reference"] = args.align_reference
    return opts


def register(sub: argparse._SubParsersAction) -> None:
    from ..align import ALIGN_MODES

    p = sub.add_parser(
        "align",
        help="register the layers of a focal stack (focus breathing, hand shake, exposure) and write them",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input/output")
    io.add_argument("inputs", nargs="+", metavar="INPUT", help="a folder of layers, image files, or a multi-page TIFF")
    io.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help=f"writes the aligned layers and {TRANSFORMS_NAME}"
    )
    io.add_argument("--ext", default=".png", help="extension of the aligned layers (.png/.tif keep 16 bits)")
    io.add_argument("--overwrite", action="store_true", help="replace existing files in OUTDIR")
    io.add_argument("--json", action="store_true", help="print the alignment summary on stdout")
    a = p.add_argument_group("alignment")
    a.add_argument(
        "--mode",
        choices=ALIGN_MODES,
        default="auto",
        help="motion model; auto = skipped when registered, else the model the residuals need",
    )
    add_alignment_options(a)
    a.add_argument("--no-brightness", action="store_true", help="do not match the layers' brightness to the reference")
    p.set_defaults(func=_cmd_align)


def _layer_names(paths: list[Path], n: int, ext: str) -> list[str]:
    stems = [p.stem for p in paths] if len(paths) == n else []
    if len(set(stems)) != n:  # a multi-page TIFF, or clashing names: number the layers
        stems = [f"{k:02d}" for k in range(n)]
    return [s + ext for s in stems]


def _cmd_align(args: argparse.Namespace) -> int:
    from ..align import align_stack, save_transforms
    from ..io import IMAGE_EXTENSIONS, OutputSet, check_output_path, collect_files, load_stack, save_image

    ext = args.ext if args.ext.startswith(".") else "." + args.ext
    if ext.lower() not in IMAGE_EXTENSIONS:
        raise StackMFFError(f"--ext must be an image extension such as .png or .tif, got {args.ext!r}")
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise StackMFFError(f"OUTDIR {out} is a file; -o takes a folder for the aligned layers")
    files = collect_files(args.inputs)
    opts = alignment_options(args)
    save_to = opts.pop("save_transforms", None)
    for p in [out / TRANSFORMS_NAME] + ([Path(save_to)] if save_to else []):
        check_output_path(p, overwrite=args.overwrite, inputs=files)
    stack = load_stack(files)
    names = _layer_names(list(stack.paths), stack.n, ext)
    targets = [out / nm for nm in names] + [out / TRANSFORMS_NAME]
    for t in targets:
        check_output_path(t, overwrite=args.overwrite, inputs=files)
    # layers an earlier run into this folder wrote (it has our transforms file) that this run will not rewrite
    stale = _stale_layers(out, set(names), files) if args.overwrite and (out / TRANSFORMS_NAME).is_file() else []
    res = align_stack(stack.images, mode=args.mode, match_brightness=not args.no_brightness, **opts)
    with OutputSet(overwrite=args.overwrite) as outs:  # every layer and the transforms, or nothing
        for o, i in enumerate(res.kept):
            save_image(out / names[i], res.images[o], bit_depth=stack.bit_depth, overwrite=args.overwrite, outputs=outs)
        save_transforms(out / TRANSFORMS_NAME, res, outputs=outs)
        if save_to:
            save_transforms(save_to, res, outputs=outs)
    dropped = {out / names[i] for i in range(stack.n)} - {out / names[i] for i in res.kept}
    for p in [*stale, *(d for d in dropped if d.is_file())]:
        p.unlink(missing_ok=True)
    summary = res.summary()
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        what = (
            "already registered, copied" if res.skipped else f"{res.mode}, max shift {summary['max_shift_px']:.1f} px"
        )
        print(f"wrote {len(res.kept)} layers to {out} ({what}, {res.seconds:.2f} s)", file=sys.stderr)
    return 0


def _stale_layers(out: Path, names: set[str], inputs: list[Path]) -> list[Path]:
    from ..io import IMAGE_EXTENSIONS

    keep = {p.resolve() for p in inputs}
    return [
        p
        for p in out.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name not in names and p.resolve() not in keep
    ]
