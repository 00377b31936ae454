"""Validation numbers of the model card: StackMFF V3 weights against the classical methods on held-out stacks.

Test sets (never seen in training; training draws procedural scenes with seed 0, its validation with seed 10000):

- ``procedural``: ``ProceduralStacks`` (physical synthesis) with seed 999, 256×256, N in [4, 10], no invalid layers;
- ``middlebury``: the Middlebury 2005/2006 half-size RGB-D scenes of ``../shared/data/middlebury_rgbd`` (research
  use; read at run time, never copied), rendered with ``synthesize_physical`` (N = 8, seed = scene number). Skipped
  when absent.
- ``open3d``: the registered real RGB-D frames of ``../shared/data/rgbd_samples_open3d`` (TUM, SUN RGB-D, and the
  synthetic ICL frame; the NYU raw frame is not registered and left out), rendered the same way (seeds 0-3; the
  pyramid constants were tuned on renders of these frames with seeds 50-53, so this set is not fully held out).
- ``--layers 8 24`` renders the real-texture sets at several N: sets ``middlebury`` (N = 8) and ``middlebury_n24``.

Methods: every classical method; ``stackmff_v3`` with its defaults (``gather="pyramid"``: a Laplacian-pyramid blend
steered by the probabilities; ``half_res=True``: the cross-layer stage at half resolution); ``stackmff_v3:hard``
(exact source values of the most probable layer), ``stackmff_v3:soft`` (probability-weighted colour, OpenFocus'
default; the author's code gathers hard), ``stackmff_v3:half_res=false`` (the default colour rule, the network
exactly as trained) and ``stackmff_v3:preset=upstream`` (the author's inference step by step: 8-bit OpenCV gray,
resize to a multiple of 32, fp32, argmax, nearest-resized index map, hard gather; no outlier rejection).
``oracle:hard`` / ``oracle:pyramid`` (``--oracle``) replace the network by the ground-truth focus index (one-hot
logits) under the same colour rule: the ceiling a perfect classifier would reach, so ``oracle - stackmff_v3`` is what
a bigger model or better training data could gain at most with that rule (clean stacks only).
For every stack and method: PSNR and SSIM (scikit-image, RGB, data range 1) of the fused image against the AiF image;
``shuffle_delta_db`` = |PSNR(layers in random order) - PSNR(focus order)|; ``invalid_delta_db`` = PSNR with four
invalid layers inserted (blurred everywhere, duplicate, strong noise, exposure-shifted) minus clean PSNR.

Usage::

    python weights/validate.py --weights weights/stackmff_v3.pt --json weights/validation.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stackmff.data.augment import inject_invalid_layers
from stackmff.data.datasets import ProceduralStacks
from stackmff.data.rgbd import load_rgbd_samples
from stackmff.data.synthesis import SynthStack, synthesize_physical
from stackmff.fusion import get_fusion_method, list_methods
from stackmff.io import atomic_write

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
INVALID = ("blurred", "duplicate", "noisy", "exposure")


def _scores(fused: np.ndarray, aif: np.ndarray) -> tuple[float, float]:
    psnr = peak_signal_noise_ratio(aif, np.clip(fused, 0, 1), data_range=1.0)
    ssim = structural_similarity(aif, np.clip(fused, 0, 1), data_range=1.0, channel_axis=0)
    return float(psnr), float(ssim)


def _stacks(args) -> dict[str, list[tuple[str, SynthStack]]]:
    sets: dict[str, list[tuple[str, SynthStack]]] = {}
    if "procedural" in args.sets:
        ds = ProceduralStacks(
            args.procedural, size=(256, 256), n_range=(4, 10), invalid_prob=0.0, shuffle=False, seed=999
        )
        sets["procedural"] = [(f"proc{i:02d}", ds.draw(i)) for i in range(args.procedural)]
    for base, folder in (("middlebury", "middlebury_rgbd"), ("open3d", "rgbd_samples_open3d")):
        root = SHARED / folder
        if base not in args.sets or not root.is_dir() or (base == "middlebury" and args.skip_middlebury):
            continue
        scenes = load_rgbd_samples(root)
        for n in args.layers:
            sets[base if n == 8 else f"{base}_n{n}"] = [
                (sc.name, synthesize_physical(sc.image, sc.disparity, n, rng=np.random.default_rng(i)))
                for i, sc in enumerate(scenes)
            ]
    return sets


def _variants(st: SynthStack, rng: np.random.Generator) -> dict[str, np.ndarray]:
    order = rng.permutation(st.n)
    inv = st
    for kind in INVALID:  # one layer of each kind
        inv = inject_invalid_layers(inv, rng, kinds=(kind,), count=1)
    return {"clean": st.layers, "shuffled": st.layers[order], "invalid": inv.layers}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", required=True, help="V3 checkpoint to validate")
    p.add_argument("--methods", nargs="*", help="methods (default: every non-learned method + stackmff_v3)")
    p.add_argument("--procedural", type=int, default=12, help="held-out procedural stacks")
    p.add_argument("--skip-middlebury", action="store_true")
    p.add_argument(
        "--sets", nargs="+", default=["procedural", "middlebury"], choices=("procedural", "middlebury", "open3d")
    )
    p.add_argument("--layers", type=int, nargs="+", default=[8], help="N of the rendered real-texture stacks")
    p.add_argument("--oracle", action="store_true", help="add the ground-truth-index ceilings oracle:hard/pyramid")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write per-stack and mean results here (atomic)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    # "stackmff_v3:soft" = the stackmff_v3 method with gather="soft" (probability-weighted colour), etc.
    methods = args.methods or [m.name for m in list_methods() if not m.learned] + [
        "stackmff_v3",
        "stackmff_v3:hard",
        "stackmff_v3:soft",
        "stackmff_v3:half_res=false",
        "stackmff_v3:preset=upstream",
    ]
    rows = []
    for set_name, stacks in _stacks(args).items():
        for name, st in stacks:
            variants = _variants(st, np.random.default_rng(zlib.crc32(name.encode())))
            if args.oracle:
                from stackmff.fusion.pyramid_blend import pyramid_blend

                onehot = np.where(np.arange(st.n)[:, None, None] == st.index[None], 0.0, -30.0).astype(np.float32)
                hard = np.take_along_axis(st.layers, st.index[None, None].repeat(3, 1), 0)[0]
                for meth, fused in (("oracle:hard", hard), ("oracle:pyramid", pyramid_blend(st.layers, onehot))):
                    psnr, ssim = _scores(fused, st.aif)
                    rows.append(
                        {
                            "set": set_name,
                            "stack": name,
                            "method": meth,
                            "layers": st.n,
                            "clean_psnr": psnr,
                            "clean_ssim": ssim,
                        }
                    )
                    print(f"{set_name:10s} {name:12s} {meth:18s} psnr {psnr:6.2f} ssim {ssim:.4f}", file=sys.stderr)
            for meth in methods:
                base, _, extra = meth.partition(":")  # "stackmff_v3:soft" or "stackmff_v3:half_res=true,gather=hard"
                fm = get_fusion_method(base)
                opts = {"weights": args.weights, "device": "cpu"} if fm.learned else {}
                for item in filter(None, extra.split(",")):
                    key, eq, value = item.partition("=")
                    opts.update(
                        {key: value.lower() == "true" if value.lower() in ("true", "false") else value}
                        if eq
                        else {"gather": key}
                    )
                row = {"set": set_name, "stack": name, "method": meth, "layers": st.n}
                for vname, layers in variants.items():
                    t0 = time.perf_counter()
                    res = fm(np.ascontiguousarray(layers), **opts)
                    row[f"{vname}_seconds"] = round(time.perf_counter() - t0, 3)
                    row[f"{vname}_psnr"], row[f"{vname}_ssim"] = _scores(res.image, st.aif)
                row["shuffle_delta_db"] = abs(row["shuffled_psnr"] - row["clean_psnr"])
                row["invalid_delta_db"] = row["invalid_psnr"] - row["clean_psnr"]
                rows.append(row)
                print(
                    f"{set_name:10s} {name:12s} {meth:18s} psnr {row['clean_psnr']:6.2f} ssim {row['clean_ssim']:.4f}"
                    f" shuffle {row['shuffle_delta_db']:.3f} invalid {row['invalid_delta_db']:+.2f}",
                    file=sys.stderr,
                )
    keys = ["clean_psnr", "clean_ssim", "shuffle_delta_db", "invalid_delta_db", "invalid_psnr", "clean_seconds"]
    summary: dict = {}
    for set_name in dict.fromkeys(r["set"] for r in rows):
        for meth in methods + (["oracle:hard", "oracle:pyramid"] if args.oracle else []):
            sel = [r for r in rows if r["set"] == set_name and r["method"] == meth]
            summary.setdefault(set_name, {})[meth] = {
                k: round(float(np.mean([r[k] for r in sel])), 4) for k in keys if k in sel[0]
            }
    out = {"weights": args.weights, "summary": summary, "rows": rows}
    if args.json:
        with atomic_write(args.json, mode="w", overwrite=True) as f:
            f.write(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
