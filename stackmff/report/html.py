"""One self-contained HTML page for a benchmark: tables, plots and side-by-side crops of fused images per scene.

Self-contained means no external request at all: CSS is inline and every image is a base64 ``data:`` URI, so the
file can be mailed, attached to a CI run or opened offline.

The crop of each scene is placed where the methods disagree most (largest per-pixel standard deviation of luma
across the fused images, averaged over the crop window), which is where a reader wants to look.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from ..io import load_image
from .tables import Table, write_text

__all__ = ["SceneView", "build_html", "select_crop", "table_html"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1280px;
color:#1d2330;padding:0 16px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:28px 0 8px;border-bottom:1px solid #d8dce5;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}
.meta{color:#5a6275;font-size:12px}
.table-wrap{overflow-x:auto;max-width:100%;margin:6px 0 14px}
table{border-collapse:separate;border-spacing:0;font-size:12.5px}
th,td{border:1px solid #d8dce5;border-width:0 0 1px 1px;padding:3px 8px;text-align:right;white-space:nowrap;
background:#fff}
tr:first-child th{border-top-width:1px}
th:last-child,td:last-child{border-right-width:1px}
th:first-child,td:first-child{text-align:left;position:sticky;left:0;z-index:1;box-shadow:1px 0 0 #b9bfcc}
thead th{background:#eef1f6}
td.best{font-weight:700;background:#e6f4ea}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots figure{flex:1 1 520px;max-width:620px}
.plots img{width:100%;height:auto;border:1px solid #e3e6ee}
.scene{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}
figure{margin:0;text-align:center}
figure img{display:block;image-rendering:pixelated;border:1px solid #c9ceda}
figcaption{font-size:11px;color:#333;max-width:200px;overflow-wrap:anywhere}
.absent{color:#a33}
"""


@dataclass
class SceneView:
    """What the page shows for one scene.

    Attributes:
        dataset: dataset name.
        scene: scene name.
        fused: method -> fused image file.
        index_maps: method -> colour-mapped index map file (``*_preview.png``), when the method has one.
        ground_truth: all-in-focus reference image, if the benchmark has one.
        layers: number of layers N of the stack (shown in the heading).
        captions: method -> extra caption line under its crop (e.g. the blur-check numbers of a real stack).
    """

    dataset: str
    scene: str
    fused: Mapping[str, Path] = field(default_factory=dict)
    index_maps: Mapping[str, Path] = field(default_factory=dict)
    ground_truth: Path | None = None
    layers: int | None = None
    captions: Mapping[str, str] = field(default_factory=dict)


def _hwc(img: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float [0, 1] -> ``(H, W, 3)`` uint8 RGB."""
    x = np.clip(img, 0.0, 1.0)
    x = np.repeat(x, 3, axis=0) if x.shape[0] == 1 else x
    return np.rint(x.transpose(1, 2, 0) * 255.0).astype(np.uint8)


def _png_uri(rgb: np.ndarray) -> str:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _file_uri(path: str | os.PathLike) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def select_crop(images: Sequence[np.ndarray], size: int) -> tuple[int, int, int]:
    """Top-left corner and side of the square window where ``images`` differ most.

    Args:
        images: ``(H, W, 3)`` uint8 images of one size (at least one).
        size: wanted window side; clipped to the image.

    Returns:
        ``(y, x, side)``.

    Examples:
        >>> a = np.zeros((64, 64, 3), np.uint8); b = a.copy(); b[40:50, 5:15] = 255
        >>> y, x, s = select_crop([a, b], 16)
        >>> (y <= 40 and y + s >= 50, x <= 5 and x + s >= 15)
        (True, True)
    """
    h, w = images[0].shape[:2]
    side = int(max(8, min(size, h, w)))
    if len(images) < 2:
        return (h - side) // 2, (w - side) // 2, side
    luma = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY).astype(np.float32) for im in images])
    spread = luma.std(axis=0)
    # mean spread over every side x side window; the window is the top-left anchored box sum
    integral = cv2.integral(spread)
    sums = integral[side:, side:] - integral[:-side, side:] - integral[side:, :-side] + integral[:-side, :-side]
    y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(y), int(x), side


def table_html(table: Table) -> str:
    """Render a :class:`~stackmff.report.tables.Table` as an HTML table (best cells get class ``best``).

    The table sits in a horizontally scrolling ``div.table-wrap`` and its first column (the method) is sticky, so a
    table with many metric columns scrolls inside the page instead of widening it, and the method stays visible.
    """
    cols = list(table.cells.columns)
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for row in table.cells.index:
        tds = []
        for c in cols:
            cls = ' class="best"' if bool(table.best.at[row, c]) else ""
            tds.append(f"<td{cls}>{html.escape(str(table.cells.at[row, c]))}</td>")
        body.append(f"<tr><td>{html.escape(str(row))}</td>{''.join(tds)}</tr>")
    return (
        f'<div class="table-wrap"><table><thead><tr><th>method</th>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _scene_html(view: SceneView, crop: int, thumb: int) -> str:
    fused = {m: _hwc(load_image(p)[0]) for m, p in sorted(view.fused.items())}
    gt = _hwc(load_image(view.ground_truth)[0]) if view.ground_truth else None
    if not fused:
        return ""
    ref = gt if gt is not None else next(iter(fused.values()))
    h, w = ref.shape[:2]
    # methods that crop while aligning give other sizes: resize them to the reference frame for display only
    same = {
        m: im if im.shape[:2] == (h, w) else cv2.resize(im, (w, h), interpolation=cv2.INTER_AREA)
        for m, im in fused.items()
    }
    y, x, s = select_crop(list(same.values()), crop)
    scale = thumb / max(h, w)
    small = cv2.resize(ref, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    r = [round(v * scale) for v in (x, y, x + s, y + s)]
    cv2.rectangle(small, (r[0], r[1]), (r[2], r[3]), (255, 40, 40), 2)
    figs = [
        f'<figure><img src="{_png_uri(small)}" alt="overview"><figcaption>{"ground truth" if gt is not None else "overview"}'
        f" {w}×{h}, crop at ({x}, {y})</figcaption></figure>"
    ]
    disp = max(s, 160)
    if gt is not None:
        figs.append(_crop_fig(gt[y : y + s, x : x + s], "ground truth", disp))
    for m, im in same.items():
        parts = [_crop_img(im[y : y + s, x : x + s], disp)]
        if m in view.index_maps:
            imap = _hwc(load_image(view.index_maps[m])[0])
            if imap.shape[:2] != (h, w):
                imap = cv2.resize(imap, (w, h), interpolation=cv2.INTER_NEAREST)
            parts.append(_crop_img(imap[y : y + s, x : x + s], disp, nearest=True))
        cap = html.escape(m) + (f"<br>{html.escape(view.captions[m])}" if m in view.captions else "")
        figs.append(f"<figure>{''.join(parts)}<figcaption>{cap}</figcaption></figure>")
    n = f", N = {view.layers}" if view.layers else ""
    title = f"{html.escape(view.dataset)} / {html.escape(view.scene)}{n}"
    return f'<h3 id="{html.escape(view.dataset)}-{html.escape(view.scene)}">{title}</h3><div class="scene">{"".join(figs)}</div>'


def _crop_img(rgb: np.ndarray, disp: int, *, nearest: bool = False) -> str:
    if rgb.shape[0] != disp:
        interp = cv2.INTER_NEAREST if nearest or disp > rgb.shape[0] else cv2.INTER_AREA
        rgb = cv2.resize(rgb, (disp, disp), interpolation=interp)
    return f'<img src="{_png_uri(rgb)}" width="{disp}" height="{disp}" alt="">'


def _crop_fig(rgb: np.ndarray, caption: str, disp: int) -> str:
    return f"<figure>{_crop_img(rgb, disp)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def build_html(
    path: str | os.PathLike,
    *,
    title: str,
    tables: Sequence[Table] = (),
    resources: Table | None = None,
    plots: Mapping[str, str | os.PathLike] | None = None,
    scenes: Sequence[SceneView] = (),
    absent: Mapping[str, str] | None = None,
    notes: Sequence[str] = (),
    crop: int = 160,
    thumb: int = 240,
) -> Path:
    """Write the self-contained report page.

    Args:
        path: HTML file to write (atomically).
        title: page title.
        tables: quality tables (one per dataset).
        resources: runtime/memory table.
        plots: caption -> PNG file, embedded as base64.
        scenes: scenes to show with crops.
        absent: method -> reason, listed under the tables (e.g. ``"focus_stack": "not installed"``).
        notes: extra paragraphs (plain text).
        crop: crop side in source pixels.
        thumb: overview thumbnail size in pixels.

    Returns:
        The written path.
    """
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">generated {stamp}; bold = best in column; values are mean ± std over scenes</p>',
    ]
    out += [f"<p>{html.escape(n)}</p>" for n in notes]
    if tables:
        out.append("<h2>Quality</h2>")
        for t in tables:
            out.append(f"<h3>{html.escape(t.title)}</h3>{table_html(t)}")
    if absent:
        items = "".join(f"<li><b>{html.escape(m)}</b>: {html.escape(r)}</li>" for m, r in sorted(absent.items()))
        out.append(f'<h3>Not compared</h3><ul class="absent">{items}</ul>')
    if resources is not None and len(resources.cells):
        out.append("<h2>Runtime and memory</h2>")
        out.append(
            '<p class="meta">seconds per stack = alignment + fusion, image loading excluded; peak MiB = resident memory '
            "added while fusing (external tools: the tool process's peak)</p>"
        )
        out.append(table_html(resources))
    if plots:
        out.append('<h2>Plots</h2><div class="plots">')
        for caption, p in plots.items():
            out.append(
                f'<figure><img src="{_file_uri(p)}" alt="{html.escape(caption)}"><figcaption>'
                f"{html.escape(caption)}</figcaption></figure>"
            )
        out.append("</div>")
    if scenes:
        out.append("<h2>Scenes</h2>")
        out.append(
            '<p class="meta">crops where the methods differ most; below each fused crop its index map '
            "(colour = source layer), when the method picks one layer per pixel</p>"
        )
        out += [_scene_html(v, crop, thumb) for v in scenes]
    out.append("</body></html>")
    return write_text(path, "\n".join(out) + "\n")
