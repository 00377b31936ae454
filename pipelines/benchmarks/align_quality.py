"""What alignment does to fused quality, on stacks with a known all-in-focus image: clean, shuffled, with invalid
layers, with focus breathing + hand shake; the default ``--align auto`` beside ``--align none``.

Stacks are synthesised with the project's thin-lens model (:func:`stackmff.data.synthesis.synthesize_physical`) from
Middlebury RGB-D scenes (``../shared/data/middlebury_rgbd``) and procedural scenes (:func:`make_scene`) on a canvas a
margin larger than the frame; "breathing" warps layer k of that canvas by a known similarity (magnification growing
through the stack by ``--breathing`` plus random shake) before cropping the frame, so every layer has real content
at its borders; breathing rows also give ``true_transforms``: the PSNR with the GT transforms applied the same way
(what a perfect estimate reaches, the resampling floor) and ``corner_err_px``, per layer the estimate's largest corner
error against those transforms. PSNR is measured against the all-in-focus image brought into
the output frame (the aligned result is in the frame of its reference layer, cropped), without a border of 8 px.

``--supersample 2`` renders optical breathing (see :func:`make_cases`); ``--procedural-seed`` picks other procedural
scenes (held out from tuning: the defaults, seeds 100 and 101, are the scenes the alignment was developed on).

Usage::

    python -m pipelines.benchmarks.align_quality --scenes art books dolls --procedural 2 --json reports/align_quality.json
    python -m pipelines.benchmarks.align_quality --scenes moebius --procedural 3 --procedural-seed 300 --supersample 2
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from stackmff.align import align_stack
from stackmff.data.augment import inject_invalid_layers, shuffle_layers
from stackmff.data.procedural import make_scene
from stackmff.data.rgbd import load_rgbd_samples
from stackmff.data.synthesis import synthesize_physical
from stackmff.fusion import get_fusion_method

MARGIN = 24
BORDER = 8


def _similarity(scale: float, rot_deg: float, tx: float, ty: float, centre: tuple[float, float]) -> np.ndarray:
    a = math.radians(rot_deg)
    cx, cy = centre
    r = np.array(
        [[scale * math.cos(a), -scale * math.sin(a), 0], [scale * math.sin(a), scale * math.cos(a), 0], [0, 0, 1]]
    )
    return (
        np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1.0]])
        @ r
        @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    )


def _down(x: np.ndarray, s: int) -> np.ndarray:
    """``(..., C, H*s, W*s)`` -> ``(..., C, H, W)`` by pixel-area averaging (what a sensor pixel integrates)."""
    if s == 1:
        return x
    flat = x.reshape(-1, *x.shape[-2:])
    out = np.stack([cv2.resize(p, (p.shape[1] // s, p.shape[0] // s), interpolation=cv2.INTER_AREA) for p in flat])
    return out.reshape(*x.shape[:-2], *out.shape[-2:])


def make_cases(
    image: np.ndarray,
    disp: np.ndarray,
    n: int,
    *,
    seed: int,
    breathing: float,
    shake: float,
    supersample: int = 1,
) -> dict:
    """``{case: (layers (N, 3, h, w), gt_of(reference, crop) -> (3, h', w'))}`` for one scene.

    ``supersample`` s > 1 renders the stack, warps the breathing layers and the all-in-focus image on a grid s times
    finer (the scene upsampled by bicubic interpolation, CoC and noise scaled to match) and averages each s x s
    block, as a sensor pixel integrates the optical image. Then the breathing layers are optical images of the
    moved scene, not digitally resampled copies of the registered layers (with s = 1, every breathing layer has been
    resampled once before alignment resamples it again, a loss no real lens causes).
    """
    ss = supersample
    if ss > 1:
        image_s = np.clip(cv2.resize(image.transpose(1, 2, 0), None, fx=ss, fy=ss, interpolation=cv2.INTER_CUBIC), 0, 1)
        disp_s = cv2.resize(np.asarray(disp, np.float32), None, fx=ss, fy=ss, interpolation=cv2.INTER_LINEAR)
        # noise: x + sqrt(a x + b^2) n per fine pixel; the block mean divides the variance by ss^2
        fine = synthesize_physical(
            image_s.transpose(2, 0, 1), disp_s, n, rng=seed, max_coc=8.0 * ss, noise=(1e-4 * ss**2, 2e-3 * ss)
        )
        big = replace(
            fine,
            layers=_down(fine.layers, ss),
            aif=_down(fine.aif, ss),
            index=fine.index[::ss, ::ss],
            disparity=np.asarray(disp, np.float32),  # every field on the 1x grid again
        )
    else:
        fine = big = synthesize_physical(image, disp, n, rng=seed)
    _, hh, ww = image.shape
    h, w = hh - 2 * MARGIN, ww - 2 * MARGIN
    frame = np.s_[:, MARGIN : MARGIN + h, MARGIN : MARGIN + w]
    aif = big.aif[frame]
    to_canvas = np.array([[1, 0, MARGIN], [0, 1, MARGIN], [0, 0, 1.0]])
    # pixel centres of the 1x grid -> those of the fine grid (x_s = s x + (s - 1) / 2)
    to_fine = np.array([[ss, 0, (ss - 1) / 2], [0, ss, (ss - 1) / 2], [0, 0, 1.0]])

    def gt_identity(res) -> np.ndarray:
        x0, y0, cw, ch = res.crop if not res.skipped else (0, 0, w, h)
        return aif[:, y0 : y0 + ch, x0 : x0 + cw]

    cases = {"clean": (big.layers[(slice(None), *frame)], gt_identity)}
    sh = shuffle_layers(big, seed + 1)
    cases["shuffled"] = (sh.layers[(slice(None), *frame)], gt_identity)
    bad = inject_invalid_layers(big, seed + 2, kinds=("blurred", "exposure", "noisy"), count=3)
    cases["invalid"] = (bad.layers[(slice(None), *frame)], gt_identity)
    cases["invalid_kinds"] = bad.kinds

    rng = np.random.default_rng(seed + 3)
    mats = []
    warped = []
    for k in range(n):
        m = _similarity(
            1 + breathing * (k / (n - 1) - 0.5),
            rng.uniform(-0.3, 0.3),
            *rng.uniform(-shake, shake, 2),
            ((w - 1) / 2, (h - 1) / 2),
        )
        mc = to_fine @ to_canvas @ m @ np.linalg.inv(to_canvas) @ np.linalg.inv(to_fine)
        layer = fine.layers[k].transpose(1, 2, 0)
        wk = cv2.warpAffine(layer, mc[:2], layer.shape[1::-1], flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
        warped.append(_down(np.clip(wk, 0, 1).transpose(2, 0, 1), ss)[frame])
        mats.append(m)
    mats = np.stack(mats)

    def gt_warped(res, positions: list[int] | None = None) -> np.ndarray | None:
        # output pixel x (crop offset added) shows aif(M_ref^-1 x); positions: original index of each layer
        x0, y0, cw, ch = res.crop if not res.skipped else (0, 0, w, h)
        if res.skipped:  # untouched: the layers' own (GT) frame
            positions = None
        ref = res.reference if positions is None else positions[res.reference]
        if ref is None:  # an invalid layer became the reference: its transform to the GT frame is unknown
            return None
        m_ref = mats[ref] if not res.skipped else np.eye(3)
        shift = np.array([[1.0, 0, x0], [0, 1.0, y0], [0, 0, 1.0]])
        a = to_canvas @ np.linalg.inv(m_ref) @ shift  # output pixel -> canvas pixel of the aif
        a = to_fine @ a @ np.linalg.inv(to_fine)
        out = cv2.warpAffine(
            fine.aif.transpose(1, 2, 0), a[:2], (cw * ss, ch * ss), flags=cv2.INTER_LANCZOS4 | cv2.WARP_INVERSE_MAP
        )
        return _down(out.transpose(2, 0, 1), ss)

    gt_warped.matrices = mats  # the true transforms (GT frame -> layer pixels), for tests
    cases["breathing"] = (np.stack(warped).astype(np.float32), gt_warped)
    # the invalid kinds added to the breathing stack too (each a valid layer's frame, so it breathes and shakes)
    warped_stack = replace(
        big,
        layers=np.stack(warped).astype(np.float32),
        aif=big.aif[frame],
        index=big.index[frame[1:]],
        disparity=big.disparity[frame[1:]],
    )
    bad_b = inject_invalid_layers(warped_stack, seed + 4, kinds=("blurred", "exposure", "noisy"), count=3)
    # valid layers keep their order; invalid ones are never the reference (checked in gt_warped)
    positions = list(np.cumsum([k == "valid" for k in bad_b.kinds]) - 1)
    positions = [p if k == "valid" else None for p, k in zip(positions, bad_b.kinds, strict=True)]
    cases["breathing_invalid"] = (bad_b.layers, lambda res: gt_warped(res, positions))
    return cases


def _corner_errors(found: np.ndarray, true: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per layer, the largest displacement (px) of an image corner between two sets of (N, 3, 3) matrices."""
    h, w = size
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
    a, b = found @ c, true @ c
    return np.abs(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:]).max(axis=(1, 2))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    inner = np.s_[:, BORDER:-BORDER, BORDER:-BORDER]
    mse = float(np.mean((np.clip(a[inner], 0, 1).astype(np.float64) - b[inner]) ** 2))
    return 10 * math.log10(1 / max(mse, 1e-12))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="../shared/data/middlebury_rgbd")
    p.add_argument("--scenes", nargs="*", default=["art", "books", "dolls"])
    p.add_argument("--procedural", type=int, default=2, help="number of procedural scenes (512x512)")
    p.add_argument(
        "--procedural-seed", type=int, default=100, help="seed of the first procedural scene (others: held-out scenes)"
    )
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--breathing", type=float, default=0.03)
    p.add_argument("--shake", type=float, default=3.0, help="random shift per layer, px")
    p.add_argument(
        "--supersample",
        type=int,
        default=1,
        help="render and warp on a grid this many times finer, then average blocks (optical breathing: see make_cases)",
    )
    p.add_argument("--method", default="stackmff_v3")
    p.add_argument("--cases", nargs="*", default=["clean", "shuffled", "invalid", "breathing", "breathing_invalid"])
    p.add_argument("--only", nargs="*", help="run only these scenes (names as printed; seeds stay as in the full list)")
    p.add_argument("--json", help="write the table here")
    args = p.parse_args(argv)
    fm = get_fusion_method(args.method)
    rgbd = {sc.name.removeprefix("middlebury/"): sc for sc in load_rgbd_samples(args.data)}
    missing = [name for name in args.scenes if name not in rgbd]
    if missing:
        p.error(f"Middlebury scene(s) {', '.join(missing)} not in {args.data}; available: {', '.join(sorted(rgbd))}")
    scenes = [(name, rgbd[name].image, rgbd[name].disparity) for name in args.scenes]
    for s in range(args.procedural):
        sc = make_scene(args.procedural_seed + s, 512, 512)
        tag = "" if args.procedural_seed == 100 else f"_{args.procedural_seed}"
        scenes.append((f"procedural{s}{tag}", sc.image, sc.disparity))
    rows = []
    for i, (name, image, disp) in enumerate(scenes):
        if args.only and name not in args.only:
            continue
        cases = make_cases(
            image, disp, args.layers, seed=i, breathing=args.breathing, shake=args.shake, supersample=args.supersample
        )
        for case in args.cases:
            layers, gt_of = cases[case]
            row = {"scene": name, "case": case}
            for align in ("none", "auto"):
                t0 = time.perf_counter()
                res = align_stack(layers, mode=align)
                t1 = time.perf_counter()
                fused = fm(res.images).image
                t2 = time.perf_counter()
                gt = gt_of(res)
                row[align] = None if gt is None else round(psnr(fused, gt), 3)
                if align == "auto":
                    row["align_s"], row["fuse_s"] = round(t1 - t0, 3), round(t2 - t1, 3)
                    row["skipped"], row["mode"] = res.skipped, res.mode
                    row["crop"] = list(res.crop)
                    row["distrusted"] = getattr(res, "invalid", [])
                    true = getattr(gt_of, "matrices", None)
                    if true is not None and not res.skipped:
                        # the floor of this case: the same reference, crop rule and warp with the GT transforms, so
                        # auto - true is what estimation costs and clean - true what resampling costs
                        ref_inv = np.linalg.inv(true[res.reference])
                        oracle = replace(res, matrices=np.stack([m @ ref_inv for m in true]))
                        res_t = align_stack(layers, transforms=oracle)
                        row["true_transforms"] = round(psnr(fm(res_t.images).image, gt_of(res_t)), 3)
                        # per layer, the largest corner displacement between the estimate and the truth (goal 0.1 px)
                        err = _corner_errors(res.matrices, oracle.matrices, layers.shape[2:])
                        row["corner_err_px"] = [round(float(e), 3) for e in err]
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
