"""``stackmff evaluate``: metrics of fused results of a benchmark tree, written as a tidy CSV/Parquet table."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command (``metrics`` is imported when the command runs: piq costs ~2 s)."""
    p = sub.add_parser(
        "evaluate",
        help="compute fusion metrics of fused results against benchmark sources / ground truth",
        description="Evaluate FUSED_ROOT/<dataset>/<scene>.<ext> against the stacks (and AiF ground truth) or pairs "
        "of a benchmark tree; writes one row per (method, dataset, scene, metric).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input/output")
    io.add_argument("fused_root", metavar="FUSED_ROOT", help="folder of fused results <dataset>/<scene>.<ext>")
    io.add_argument("--benchmark", required=True, metavar="ROOT", help="benchmark root (<dataset>/dof_stack or A,B)")
    io.add_argument("-o", "--output", required=True, metavar="TABLE", help="table to write (.csv or .parquet)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing table")
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--method", required=True, help="method name written into the table")
    ev.add_argument("--datasets", nargs="+", help="only these datasets (default: all found)")
    ev.add_argument(
        "--metrics",
        nargs="+",
        metavar="METRIC",
        help="metric names, e.g. psnr ssim qabf (default: all; an unknown name is refused with the full list)",
    )
    ev.add_argument(
        "--on-size-mismatch",
        choices=("error", "skip", "register"),
        default="error",
        help="fused image and sources differ in size: stop, skip the scene, or register it (ORB + homography)",
    )
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from metrics.evaluate import check_table_path, write_table

    from ..benchmark import evaluate_tree

    check_table_path(args.output, overwrite=args.overwrite)  # fail before the (long) evaluation, not after
    df = evaluate_tree(
        args.fused_root,
        benchmark_root=args.benchmark,
        method=args.method,
        datasets=args.datasets,
        metrics=args.metrics,
        on_size_mismatch=args.on_size_mismatch,
    )
    write_table(df, args.output, overwrite=args.overwrite)
    summary = df.groupby(["dataset", "metric"], sort=False)["value"].mean().unstack("metric")
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"wrote {args.output} ({len(df)} rows, {df['scene'].nunique()} scenes)", file=sys.stderr)
    return 0
