"""Throughput of training-data synthesis (stacks per second, one process) and a contact sheet to look at.

Measures, for each size and mode, the time to make a procedural scene and to synthesise an N-layer stack from it
(reshuffle + invalid-layer injection included, as :class:`stackmff.data.datasets.ProceduralStacks` does per draw).

Usage::

    python -m pipelines.benchmarks.synthesis_speed --sizes 128 256 1024 --layers 8 \
        --json reports/synthesis_speed.json --sheet reports/synthesis_contact_sheet.png
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from stackmff.data.augment import inject_invalid_layers, shuffle_layers
from stackmff.data.preview import save_contact_sheet
from stackmff.data.procedural import make_scene, texture_bank
from stackmff.data.synthesis import synthesize_physical, synthesize_upstream
from stackmff.io import atomic_write


def _one(size: int, n: int, mode: str, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    scene = make_scene(rng, size, size)
    t1 = time.perf_counter()
    if mode == "physical":
        st = synthesize_physical(scene.image, scene.disparity, n, rng=rng, max_coc=8.0 * size / 256)
    else:
        st = synthesize_upstream(scene.image, np.rint(scene.disparity * 255).astype(np.uint8), n)
    st = inject_invalid_layers(shuffle_layers(st, rng), rng, max_count=2)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def measure(sizes: list[int], n: int, modes: list[str], min_time: float = 3.0, max_reps: int = 200) -> list[dict]:
    """Time scene + synthesis for each (size, mode); returns one dict per combination."""
    texture_bank()  # loaded once per process, as in a DataLoader worker
    rows = []
    for size in sizes:
        for mode in modes:
            _one(size, n, mode, 0)  # warm-up (kernel caches)
            scene_t, synth_t, reps = [], [], 0
            start = time.perf_counter()
            while reps < max_reps and (time.perf_counter() - start < min_time or reps < 3):
                a, b = _one(size, n, mode, reps + 1)
                scene_t.append(a)
                synth_t.append(b)
                reps += 1
            total = np.asarray(scene_t) + np.asarray(synth_t)
            rows.append(
                {
                    "size": size,
                    "layers": n,
                    "mode": mode,
                    "reps": reps,
                    "scene_ms": 1e3 * float(np.median(scene_t)),
                    "synth_ms": 1e3 * float(np.median(synth_t)),
                    "stacks_per_s": 1.0 / float(np.median(total)),
                }
            )
            r = rows[-1]
            print(
                f"{size:5d}^2 N={n} {mode:9s} scene {r['scene_ms']:8.1f} ms  synth {r['synth_ms']:8.1f} ms  "
                f"-> {r['stacks_per_s']:7.2f} stacks/s ({reps} reps)",
                flush=True,
            )
    return rows


def sheet(path: Path, size: int = 128) -> None:
    """A few synthesised stacks: physical, physical with invalid layers, upstream; and one real RGB-D sample."""
    stacks, titles = [], []
    for seed, (mode, inv) in enumerate([("physical", 0), ("physical", 3), ("upstream", 0), ("physical", 2)]):
        rng = np.random.default_rng(100 + seed)
        sc = make_scene(rng, size, size)
        if mode == "physical":
            st = synthesize_physical(sc.image, sc.disparity, 6, rng=rng, max_coc=8.0 * size / 256)
        else:
            st = synthesize_upstream(sc.image, np.rint(sc.disparity * 255).astype(np.uint8), 6)
        if inv:
            st = inject_invalid_layers(shuffle_layers(st, rng), rng, count=inv)
        stacks.append(st)
        titles.append(f"AiF ({mode})")
    save_contact_sheet(path, stacks, max_layers=8, tile=size, titles=titles)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 1024])
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--modes", nargs="+", default=["physical", "upstream"], choices=["physical", "upstream"])
    p.add_argument("--min-time", type=float, default=3.0, help="seconds of timing per combination")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--sheet", type=Path, help="also write a contact sheet PNG here")
    args = p.parse_args(argv)
    rows = measure(args.sizes, args.layers, args.modes, args.min_time)
    if args.json:
        with atomic_write(args.json, mode="w", overwrite=True) as f:
            json.dump({"threads": os.cpu_count(), "results": rows}, f, indent=2)
    if args.sheet:
        sheet(args.sheet)
        print(f"contact sheet: {args.sheet}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
