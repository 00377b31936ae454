"""Real-stack panel: the default ``stackmff fuse`` beside classical methods and external tools, by the blur check.

For every real focal stack of ``../shared/data`` (pcb, keyboard, bug, small_stuff, leaf, ring, the four Lytro triple
series, EPFL's microscope stack; no ground truth exists for any of them):

1. the default command ``stackmff fuse <stack> -o v3.png --save-transforms t.json`` runs as a user would run it
   (alignment, method and colour rule are the command's defaults, whatever they are);
2. the layers are registered with exactly those transforms (:func:`stackmff.align.align_stack`), and every other
   method fuses these same registered layers: the registered classical methods, and enfuse / focus-stack where
   installed (fed the registered layers, their own alignment off);
3. each fused image is checked against the registered layers with :func:`metrics.block_sharpness`: median
   sharpness ratio over textured 32-px blocks (1 = as sharp as the sharpest layer there), share of textured blocks
   below 0.4 (blurred picks), share with > 20 % unsupported edge energy (halos, ghosts); and the median ratio of
   the same blocks at half resolution (``scale=2``: without the finest octave, where a method that averages equally
   sharp noisy layers scores below 1 although no object is blurred);
4. a crop panel per stack (PNG): at V3's worst textured block and at the block where the methods disagree most,
   the sharpest registered layer beside every method, 1:1 pixels, each labelled with its ratio there.

Writes ``<out>/panel.json`` (rows per stack and method), ``<out>/panel.md`` (the table),
``<out>/crops/<stack>.png`` and ``<out>/fused/<stack>/`` (the default command's result and transforms; ``--reuse``
re-checks them without fusing again).

Usage::

    python -m pipelines.benchmarks.real_panel --out reports/real_panel
    python -m pipelines.benchmarks.real_panel --out /tmp/panel --stacks pcb ring --methods guided_filter
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from metrics import block_sharpness
from stackmff.align import align_stack
from stackmff.color import luma
from stackmff.fusion import get_fusion_method
from stackmff.io import atomic_write, load_image, load_stack, save_image
from stackmff.peers import get_peer

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
# stack name -> folder under the shared data
STACKS = {
    "pcb": "petteri_focus_stack/pcb",
    "keyboard": "mobile_depth_suwajanakorn/keyboard",
    "bug": "antoinewdg_multifocus/bug",
    "small_stuff": "antoinewdg_multifocus/small_stuff",
    "leaf": "josephlewis_leaves/leaf",
    "ring": "cmcguinness_ring/ring",
    "lytro3_01": "lytro_triple_series/lytro3_01",
    "lytro3_02": "lytro_triple_series/lytro3_02",
    "lytro3_03": "lytro_triple_series/lytro3_03",
    "lytro3_04": "lytro_triple_series/lytro3_04",
    "skeleton_zeiss": "epfl_edf_microscopy/skeleton_zeiss",
}
V3 = "stackmff_v3 (default command)"
CLASSICAL = ("guided_filter", "laplacian_pyramid", "focus_measure")
EXTERNAL = ("enfuse", "focus_stack")
# options that keep a tool's result in the frame of the registered layers it is given: focus-stack always aligns
# again and crops to the common area, and a cropped result resized back to compare blocks is misregistered by the
# crop (it read as blurred: median ratio 0.43-0.82 on every stack)
KEEP_FRAME = {"focus_stack": ("--align-keep-size",)}


def default_fuse(folder: Path, workdir: Path) -> tuple[np.ndarray, Path, float]:
    """Run the default ``stackmff fuse`` command; returns the fused image, its transforms file and wall seconds."""
    out, tf = workdir / "v3.png", workdir / "transforms.json"
    cmd = [sys.executable, "-m", "stackmff", "fuse", str(folder), "-o", str(out), "--save-transforms", str(tf)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return load_image(out)[0], tf, seconds


def external(name: str, layers: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Fuse registered layers with an installed external tool (its own alignment off); None when absent."""
    tool = get_peer(name)
    if not tool.available():
        return None
    # the layers are registered already: no align_image_stack, and the result kept in their frame
    run = tool.fuse_layers(layers, options=KEEP_FRAME.get(name, ()))
    img = run.image
    if img.shape != layers.shape[1:]:  # a tool that crops anyway: resize to compare blocks
        img = np.stack([cv2.resize(c, layers.shape[:1:-1], interpolation=cv2.INTER_AREA) for c in img])
    return img, run.seconds


def _crop_box(cy: int, cx: int, h: int, w: int, side: int) -> tuple[int, int, int, int]:
    y0 = int(np.clip(cy - side // 2, 0, max(h - side, 0)))
    x0 = int(np.clip(cx - side // 2, 0, max(w - side, 0)))
    return y0, min(y0 + side, h), x0, min(x0 + side, w)


def _tile(img: np.ndarray, box, label: str, scale: int) -> np.ndarray:
    y0, y1, x0, x1 = box
    c = np.clip(img[:, y0:y1, x0:x1].transpose(1, 2, 0) * 255 + 0.5, 0, 255).astype(np.uint8)
    c = np.repeat(c, 3, axis=2) if c.shape[2] == 1 else c
    c = cv2.resize(c, (c.shape[1] * scale, c.shape[0] * scale), interpolation=cv2.INTER_NEAREST)
    bar = np.full((22, c.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, label[: max(8, c.shape[1] // 8)], (3, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    return np.concatenate([bar, c[..., ::-1]], axis=0)  # BGR for cv2.imwrite


def crop_panel(path: Path, sharpest: np.ndarray, fused: dict[str, np.ndarray], maps: dict, block: int) -> None:
    """Two rows of crops: V3's worst textured block, and the block where the methods' ratios spread most."""
    h, w = sharpest.shape[1:]
    v3 = maps[V3]
    tex = v3.textured[0].numpy()
    if not tex.any():
        return
    r = v3.ratio[0].numpy()
    worst = np.unravel_index(np.where(tex, r, np.inf).argmin(), r.shape)
    spread = np.max([maps[m].ratio[0].numpy() for m in maps], 0) - np.min([maps[m].ratio[0].numpy() for m in maps], 0)
    disagree = np.unravel_index(np.where(tex, spread, -np.inf).argmax(), r.shape)
    side = min(4 * block, h, w)
    scale = max(1, 256 // side)
    rows = []
    for name, (by, bx) in (("V3 worst", worst), ("most disagreement", disagree)):
        box = _crop_box(by * block + block // 2, bx * block + block // 2, h, w, side)
        tiles = [_tile(sharpest, box, f"{name}: sharpest layer", scale)]
        for m, img in fused.items():
            tiles.append(_tile(img, box, f"{m.split(' ')[0]} {maps[m].ratio[0, by, bx]:.2f}", scale))
        rows.append(
            np.concatenate([np.concatenate([t, np.full((t.shape[0], 4, 3), 255, np.uint8)], 1) for t in tiles], 1)
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.concatenate([rows[0], np.full((6, rows[0].shape[1], 3), 255, np.uint8), rows[1]], 0))


def sharpest_image(layers: np.ndarray, best: np.ndarray, block: int) -> np.ndarray:
    """The registered layers composed block by block from each block's sharpest layer (for the crop panel)."""
    out = layers[0].copy()
    for by in range(best.shape[0]):
        for bx in range(best.shape[1]):
            sl = (slice(None), slice(by * block, (by + 1) * block), slice(bx * block, (bx + 1) * block))
            out[sl] = layers[best[by, bx]][sl]
    return out


def panel_stack(
    name: str, folder: Path, methods: list[str], out: Path, block: int, *, reuse: bool = False
) -> list[dict]:
    """All rows of one stack; writes its crop panel and keeps the fused images in ``out/fused/<stack>/``."""
    keep = out / "fused" / name
    with tempfile.TemporaryDirectory(prefix="panel_") as tmp:
        work = Path(tmp)
        fused, seconds = {}, {}
        cached = json.loads((keep / "seconds.json").read_text()) if reuse and (keep / "seconds.json").is_file() else {}
        if V3 in cached and (keep / "v3.png").is_file():
            fused[V3], tf, seconds[V3] = load_image(keep / "v3.png")[0], keep / "transforms.json", cached[V3]
        else:
            fused[V3], tf, seconds[V3] = default_fuse(folder, work)
            keep.mkdir(parents=True, exist_ok=True)
            save_image(keep / "v3.png", fused[V3], bit_depth=8, overwrite=True)
            if tf.is_file():
                (keep / "transforms.json").write_text(tf.read_text())
            tf = keep / "transforms.json"
            (keep / "seconds.json").write_text(json.dumps({V3: seconds[V3]}))
        stack = load_stack(folder)
        t0 = time.perf_counter()
        aligned = align_stack(stack.images, transforms=str(tf)) if tf.is_file() else None
        layers = aligned.images if aligned is not None else stack.images
        align_s = time.perf_counter() - t0
        del stack
        if fused[V3].shape != layers.shape[1:]:
            raise RuntimeError(f"{name}: fused {fused[V3].shape} vs registered layers {layers.shape[1:]}")
        for m in methods:
            t0 = time.perf_counter()
            if m in EXTERNAL:
                res = external(m, layers)
                if res is None:
                    print(f"{name}: {m} not installed, skipped", file=sys.stderr)
                    continue
                fused[m], seconds[m] = res
            else:
                fused[m] = get_fusion_method(m)(layers).image
                seconds[m] = time.perf_counter() - t0
    src = np.stack([luma(layer) for layer in layers])  # (N, H, W): the check works on luma, no float64 colour copy
    maps = {m: block_sharpness(luma(img), src, block=block) for m, img in fused.items()}
    rows = []
    for m, bs in maps.items():
        half = block_sharpness(luma(fused[m]), src, block=block, scale=2).median_ratio()
        rows.append(
            {"stack": name, "method": m, "layers": int(layers.shape[0])}
            | bs.summary()
            | {"median_ratio_half": float(half[0])}
            | {"seconds": round(seconds[m] + (align_s if m != V3 else 0.0), 2)}
        )
        print(f"{name:14s} {m:26s} " + " ".join(f"{k} {v:.3f}" for k, v in bs.summary().items()), file=sys.stderr)
    best = maps[V3].best_layer[0].numpy()
    crop_panel(out / "crops" / f"{name}.png", sharpest_image(layers, best, block), fused, maps, block)
    return rows


def to_markdown(rows: list[dict]) -> str:
    """One table: stack, method, median ratio (full and half resolution), blurred share, ghost share, textured
    blocks, seconds."""
    head = "| stack | method | median ratio | at 1/2 | blurred share (<0.4) | ghost share | textured blocks | s |"
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        half = r.get("median_ratio_half", float("nan"))  # rows kept from before the column existed
        lines.append(
            f"| {r['stack']} | {r['method']} | {r['median_ratio']:.3f} | {half:.3f} | {r['blurred_share']:.3f} | "
            f"{r['ghost_share']:.3f} | {r['textured_blocks']} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED), help="the shared data folder")
    p.add_argument("--stacks", nargs="+", choices=list(STACKS), default=list(STACKS))
    p.add_argument("--methods", nargs="+", default=[*CLASSICAL, *EXTERNAL], help="besides the default command")
    p.add_argument("--block", type=int, default=32, help="block side of the blur check")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse", action="store_true", help="reuse the default command's result kept in OUT/fused/")
    p.add_argument("--out", required=True, help="folder for panel.json, panel.md and crops/")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    # --reuse keeps the rows of methods and stacks not measured again (e.g. one tool added to an existing panel)
    kept = json.loads((out / "panel.json").read_text()) if args.reuse and (out / "panel.json").is_file() else []
    rows: list[dict] = []
    for name in args.stacks:
        folder = Path(args.data) / STACKS[name]
        if not folder.is_dir():
            print(f"{name}: {folder} not found, skipped", file=sys.stderr)
            continue
        rows.extend(panel_stack(name, folder, args.methods, out, args.block, reuse=args.reuse))
        _write(out, merge_rows(kept, rows))  # after every stack: a long run leaves what it has measured
    rows = merge_rows(kept, rows)
    if not rows:
        print(f"error: no stack found under {args.data}; pass --data", file=sys.stderr)
        return 2
    print(to_markdown(rows))
    return 0


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with every (stack, method) row that ``new`` measured again replaced in place, and ``new``'s other
    rows after the last row of their stack (or at the end)."""
    merged = list(old)
    for row in new:
        key = (row["stack"], row["method"])
        same = [i for i, r in enumerate(merged) if (r["stack"], r["method"]) == key]
        if same:
            merged[same[0]] = row
            continue
        last = [i for i, r in enumerate(merged) if r["stack"] == row["stack"]]
        merged.insert(last[-1] + 1 if last else len(merged), row)
    return merged


def _write(out: Path, rows: list[dict]) -> None:
    for fname, text in (("panel.json", json.dumps(rows, indent=1) + "\n"), ("panel.md", to_markdown(rows))):
        with atomic_write(out / fname, mode="w", overwrite=True) as f:
            f.write(text)


if __name__ == "__main__":
    raise SystemExit(main())
