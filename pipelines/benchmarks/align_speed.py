"""Cost of stack alignment per megapixel-layer: estimation, warping, and the registered-stack shortcut of ``auto``.

For each input stack and mode, times :func:`stackmff.align.align_stack` (median of ``--reps`` runs), then the same
call with the transforms given (warp + crop + brightness only), so estimation = total - apply. A registered copy
of each stack (its middle layer, Gaussian-blurred by sigma 0 to 4 px across the layers) times ``auto``'s skip;
with ``--fusion METHOD`` also that copy's fusion, to report the check's share of the fusion time (goal <= 5 %).

Usage::

    python -m pipelines.benchmarks.align_speed data/samples/ring data/samples/pcb --modes similarity homography \
        --json reports/align_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

from stackmff.align import align_stack
from stackmff.io import atomic_write, load_stack


def _median_seconds(reps: int, images: np.ndarray, **options) -> float:
    """Median wall time of ``align_stack(images, **options)`` over ``reps`` runs."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        align_stack(images, **options)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def registered_copy(images: np.ndarray) -> np.ndarray:
    """``(N, C, H, W)`` stack of the middle layer blurred by sigma 0 .. 4 px: registered by construction."""
    n = images.shape[0]
    base = images[n // 2].transpose(1, 2, 0)
    layers = [base if k == 0 else cv2.GaussianBlur(base, (0, 0), 4.0 * k / (n - 1)) for k in range(n)]
    return np.stack([x.reshape(base.shape).transpose(2, 0, 1) for x in layers]).astype(np.float32)


def measure(folders: list[str], modes: list[str], reps: int = 3, fusion: str | None = None) -> list[dict]:
    """One row per (stack, mode), plus one ``auto`` row on a registered copy of each stack (with its fusion time
    and the check's share of it when ``fusion`` names a method)."""
    rows = []
    for folder in folders:
        images = load_stack(folder).images
        n, _, h, w = images.shape
        mp_layers = n * h * w / 1e6
        align_stack(images[:2], mode="similarity")  # warm-up (OpenCV initialisation)
        for mode in modes:
            res = align_stack(images, mode=mode)
            total = _median_seconds(reps, images, mode=mode)
            apply = 0.0 if res.skipped else _median_seconds(reps, images, transforms=res)
            rows.append(
                {
                    "stack": folder,
                    "layers": n,
                    "width": w,
                    "height": h,
                    "mode": mode,
                    "skipped": res.skipped,
                    "seconds": round(total, 4),
                    "estimate_seconds": round(total - apply, 4),
                    "apply_seconds": round(apply, 4),
                    "seconds_per_mp_layer": round(total / mp_layers, 4),
                    "max_shift_px": res.summary()["max_shift_px"],
                }
            )
        reg = registered_copy(images)
        res = align_stack(reg, mode="auto")
        total = _median_seconds(reps, reg, mode="auto")
        extra = {}
        if fusion:
            from stackmff.fusion import get_fusion_method

            t0 = time.perf_counter()
            get_fusion_method(fusion)(reg)
            fuse_s = time.perf_counter() - t0
            extra = {"fusion": fusion, "fuse_seconds": round(fuse_s, 3), "check_share": round(total / fuse_s, 4)}
        rows.append(
            {
                "stack": f"{folder} (registered copy)",
                "layers": n,
                "width": w,
                "height": h,
                "mode": "auto",
                "skipped": res.skipped,
                "seconds": round(total, 4),
                "estimate_seconds": round(total, 4),
                "apply_seconds": 0.0,
                "seconds_per_mp_layer": round(total / mp_layers, 4),
                "max_shift_px": res.summary()["max_shift_px"],
                **extra,
            }
        )
        for r in rows[-len(modes) - 1 :]:
            print(
                f"{r['stack']:<40s} {r['layers']:2d}x{r['width']}x{r['height']} {r['mode']:<11s} "
                f"{'skipped' if r['skipped'] else 'aligned':<8s} {r['seconds']:7.3f} s "
                f"(estimate {r['estimate_seconds']:.3f}, apply {r['apply_seconds']:.3f}) "
                f"= {r['seconds_per_mp_layer']:.4f} s/MP-layer"
                + (f"; {r['check_share']:.1%} of {r['fusion']}" if "check_share" in r else ""),
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("stacks", nargs="*", default=["data/samples/ring", "data/samples/pcb"], help="stack folders")
    p.add_argument("--modes", nargs="+", default=["auto", "similarity", "homography"])
    p.add_argument("--reps", type=int, default=3, help="timed runs per measurement (median reported)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--fusion", metavar="METHOD", help="also time this method on the registered copy (check share)")
    args = p.parse_args(argv)
    rows = measure(args.stacks, args.modes, args.reps, args.fusion)
    if args.json:
        with atomic_write(args.json, mode="w", overwrite=True) as f:
            json.dump(
                {"cpu_count": os.cpu_count(), "opencv_threads": cv2.getNumThreads(), "results": rows}, f, indent=2
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
