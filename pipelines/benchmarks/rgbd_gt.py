"""V3's colour rules against the classical methods on RGB-D renders with a known all-in-focus image: stacks and pairs.

The real RGB-D scenes of ``../shared/data`` (Middlebury 2005/2006 and Open3D's registered TUM/SUN/ICL frames, see
:func:`stackmff.data.rgbd.load_rgbd_samples`) are rendered through the physical thin-lens synthesis
(:func:`stackmff.data.synthesis.synthesize_physical`) into

- ``stacks``: registered focal stacks of N = 8 or 10 layers (alternating over the scenes);
- ``pairs``: two-layer stacks of the same scenes, stored as 16-bit (layers rounded to 1/65535); with a continuous
  depth, mid-depth pixels are sharp in neither layer (PSNR ~35 dB for every method);
- ``pairs_planes``: two-layer 16-bit stacks of the scenes cut into two depth planes (disparity split at its median),
  each layer focused on one plane, CoC 6 px on the other: every pixel is sharp in one layer except where the
  near plane's blur spreads over the far one (the classic foreground/background pair, with a known AiF).

Every method fuses the layers; PSNR/SSIM (scikit-image, RGB, data range 1) against the scene's image (the AiF).
Methods: the registered classical ones, ``argmax`` (plain per-pixel argmax of the local Laplacian energy, no
regularisation: the simplest sharpness rule), and ``stackmff_v3`` with its defaults, ``:hard``, ``:soft`` or other
options (``stackmff_v3:gather=pyramid,half_res=false``); where installed, the external programs ``openfocus`` (the
author's app and V3 weights; ``openfocus:hard`` for its hard mode), ``focus_stack`` and ``enfuse``, fed the layers as
16-bit PNGs with their alignment off. Render seeds: ``--seed`` + scene index (report runs use
1000; the tuning runs of :func:`tune_pyramid` used 5000, so the reported renders are never tuned on).

``--tune`` instead grid-searches the pyramid blend's constants (``alpha``, ``beta``, ``window``) on the network's
logits of each stack (computed once), for choosing settings on tuning renders only.

Usage::

    python -m pipelines.benchmarks.rgbd_gt --json reports/rgbd_gt.json            # report renders (seed 1000)
    python -m pipelines.benchmarks.rgbd_gt --seed 5000 --tune --sets pairs        # tuning renders
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from stackmff.color import luma
from stackmff.data.rgbd import load_rgbd_samples
from stackmff.data.synthesis import synthesize_physical
from stackmff.fusion import get_fusion_method, list_methods
from stackmff.fusion._common import gather
from stackmff.fusion.focus_measure import focus_measure
from stackmff.fusion.pyramid_blend import pyramid_blend
from stackmff.io import atomic_write
from stackmff.models.checkpoint import load_model
from stackmff.models.inference import predict_logits
from stackmff.models.stackmff_v3 import fold_batchnorm
from stackmff.peers import get_peer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CLASSICAL = ("guided_filter", "laplacian_pyramid", "focus_measure", "wavelet", "argmax")
SETS = ("stacks", "pairs", "pairs_planes")
DEFAULT_METHODS = (*CLASSICAL, "stackmff_v3", "stackmff_v3:hard", "stackmff_v3:soft")
# external programs, fed the layers as 16-bit PNGs with their own alignment off: the author's OpenFocus app (its
# StackMFF V3 weights; ``openfocus:hard`` for its hard AI mode, default soft), focus-stack (keeps the frame), enfuse
EXTERNAL = {
    "openfocus": lambda opts: ("--align", "none", "--cpu", "--ai-mode", opts.get("gather", "soft")),
    "focus_stack": lambda opts: ("--align-keep-size",),
    "enfuse": lambda opts: (),
}


def render(
    root: Path, seed: int, sets: list[str], *, pair_coc: float = 12.0
) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    """``{set: [(name, layers (N, 3, H, W) float32, aif (3, H, W) float32)]}`` rendered from the RGB-D scenes."""
    scenes = load_rgbd_samples(root)
    out: dict[str, list] = {s: [] for s in sets}
    for i, sc in enumerate(scenes):
        aif = np.asarray(sc.image, np.float32)
        if "stacks" in sets:
            n = (8, 10)[i % 2]
            st = synthesize_physical(sc.image, sc.disparity, n, rng=np.random.default_rng(seed + i))
            out["stacks"].append((f"{sc.name}_n{n}", st.layers.astype(np.float32), aif))
        if "pairs" in sets:
            st = synthesize_physical(sc.image, sc.disparity, 2, rng=np.random.default_rng(seed + 100 + i))
            layers = (np.round(np.clip(st.layers, 0, 1) * 65535) / 65535).astype(np.float32)  # 16-bit files
            out["pairs"].append((sc.name, layers, aif))
        if "pairs_planes" in sets:
            # two depth planes (disparity split at its median), each layer focused on one: every pixel is sharp in
            # one layer away from the occlusion edge, as in the classic foreground/background pairs
            disp = np.asarray(sc.disparity, np.float32)
            planes = np.where(disp > np.median(disp), np.float32(0.75), np.float32(0.25))
            st = synthesize_physical(
                sc.image, planes, 2, focus=[0.25, 0.75], rng=np.random.default_rng(seed + 200 + i), max_coc=pair_coc
            )
            layers = (np.round(np.clip(st.layers, 0, 1) * 65535) / 65535).astype(np.float32)
            out["pairs_planes"].append((sc.name, layers, aif))
    return out


def scores(fused: np.ndarray, aif: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of an RGB ``(3, H, W)`` image against the AiF, data range 1."""
    f = np.clip(fused, 0, 1).astype(np.float32)
    return (
        float(peak_signal_noise_ratio(aif, f, data_range=1.0)),
        float(structural_similarity(aif, f, data_range=1.0, channel_axis=0)),
    )


def argmax_fuse(layers: np.ndarray) -> np.ndarray:
    """Plain per-pixel argmax of the local Laplacian energy (Gaussian window sigma 2), then gather."""
    fm = np.stack([focus_measure(luma(layer)) for layer in layers])
    return gather(layers, fm.argmax(0))


def _parse(meth: str) -> tuple[str, dict]:
    base, _, extra = meth.partition(":")
    opts: dict = {}
    for item in filter(None, extra.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            opts["gather"] = key
        elif value.lower() in ("true", "false"):
            opts[key] = value.lower() == "true"
        else:
            opts[key] = value
    return base, opts


def fuse(meth: str, layers: np.ndarray, weights: str | None) -> np.ndarray:
    """Fuse with a registered method (``name:opt=value,...``) or ``argmax``; returns ``(3, H, W)``."""
    if meth == "argmax":
        return argmax_fuse(layers)
    base, opts = _parse(meth)
    if base in EXTERNAL:
        return fuse_external(base, opts, layers)
    fm = get_fusion_method(base)
    if fm.learned:
        opts = {"device": "cpu", **({"weights": weights} if weights else {}), **opts}
    return fm(np.ascontiguousarray(layers), **opts).image


def fuse_external(name: str, opts: dict, layers: np.ndarray) -> np.ndarray:
    """Fuse with an installed external program (see ``EXTERNAL``); layers written as 16-bit PNGs."""
    img = get_peer(name).fuse_layers(layers, options=EXTERNAL[name](opts), bit_depth=16).image
    if img.shape != layers.shape[1:]:
        raise RuntimeError(f"{name} returned {img.shape}, expected {layers.shape[1:]}")
    return img


def evaluate(sets: dict, methods: list[str], weights: str | None) -> dict:
    """Per-stack rows and per-set means for every method."""
    rows = []
    for set_name, items in sets.items():
        for name, layers, aif in items:
            for meth in methods:
                t0 = time.perf_counter()
                psnr, ssim = scores(fuse(meth, layers, weights), aif)
                rows.append(
                    {"set": set_name, "stack": name, "method": meth, "layers": int(layers.shape[0]), "psnr": psnr}
                    | {"ssim": ssim, "seconds": round(time.perf_counter() - t0, 3)}
                )
                print(f"{set_name:6s} {name:32s} {meth:26s} {psnr:6.2f} dB  {ssim:.4f}", file=sys.stderr)
    summary: dict = {}
    for set_name in sets:
        for meth in methods:
            sel = [r for r in rows if r["set"] == set_name and r["method"] == meth]
            if sel:
                summary.setdefault(set_name, {})[meth] = {
                    k: round(float(np.mean([r[k] for r in sel])), 4) for k in ("psnr", "ssim", "seconds")
                }
    return {"summary": summary, "rows": rows}


def tune_pyramid(sets: dict, weights: str | None, grid: dict[str, list]) -> dict:
    """Mean PSNR per set of :func:`pyramid_blend` over a grid of constants, on logits computed once per stack."""
    model = fold_batchnorm(load_model(weights, device="cpu"))
    out: dict = {}
    for set_name, items in sets.items():
        table: dict[str, list[float]] = {}
        for name, layers, aif in items:
            lum = np.stack([luma(layer) for layer in layers])
            logits = predict_logits(model, lum, layer_group=1, half_res=True).numpy()
            for alpha, beta, window in itertools.product(grid["alpha"], grid["beta"], grid["window"]):
                img = pyramid_blend(layers, logits, alpha=alpha, beta=beta, window=window)
                table.setdefault(f"alpha={alpha},beta={beta},window={window}", []).append(scores(img, aif)[0])
            table.setdefault("hard", []).append(scores(gather(layers, logits.argmax(0)), aif)[0])
            print(f"{set_name} {name} done", file=sys.stderr)
        out[set_name] = dict(sorted(((k, round(float(np.mean(v)), 4)) for k, v in table.items()), key=lambda x: -x[1]))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED), help="folder holding middlebury_rgbd/ and rgbd_samples_open3d/")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--seed", type=int, default=1000, help="render seed base (report: 1000; tuning: 5000)")
    p.add_argument("--pair-coc", type=float, default=12.0, help="pairs_planes: max_coc (CoC radius = half of it)")
    p.add_argument("--methods", nargs="+", help=f"default: {' '.join(DEFAULT_METHODS)}")
    p.add_argument("--weights", help="V3 checkpoint (default: the shipped weights)")
    p.add_argument("--tune", action="store_true", help="grid-search the pyramid blend constants instead")
    p.add_argument("--alpha", nargs="+", type=float, default=[0.25, 0.5, 1.0])
    p.add_argument("--beta", nargs="+", type=float, default=[2.0, 4.0, 6.0])
    p.add_argument("--window", nargs="+", type=int, default=[3, 5])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the results here (atomic)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.data).is_dir():
        print(f"error: data folder {args.data} not found; pass --data", file=sys.stderr)
        return 2
    methods = args.methods or list(DEFAULT_METHODS)
    if not args.tune:  # checked before the minutes of rendering
        known = {m.name for m in list_methods()} | {"argmax"} | set(EXTERNAL)
        bad = [m for m in methods if _parse(m)[0] not in known]
        if bad:
            print(f"error: unknown method(s) {', '.join(bad)}; see `stackmff methods`", file=sys.stderr)
            return 2
        absent = [m for m in methods if _parse(m)[0] in EXTERNAL and not get_peer(_parse(m)[0]).available()]
        if absent:
            print(f"error: {', '.join(absent)} not installed (not on PATH); see pipelines/README.md", file=sys.stderr)
            return 2
    sets = render(Path(args.data), args.seed, args.sets, pair_coc=args.pair_coc)
    if args.tune:
        out = {"seed": args.seed, "tune": tune_pyramid(sets, args.weights, vars(args))}
    else:
        out = {"seed": args.seed, **evaluate(sets, methods, args.weights)}
    if args.json:
        with atomic_write(args.json, mode="w", overwrite=True) as f:
            f.write(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out.get("summary", out.get("tune")), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
