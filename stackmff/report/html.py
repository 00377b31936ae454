"""One self-contained HTML page for a benchmark: tables, plots, a comparison viewer and crops per scene.

Self-contained means no external request at all: CSS and JavaScript are inline and every image is a base64
``data:`` URI, so the file can be mailed, attached to a CI run or opened offline.

Per scene, a viewer shows two images on the same full-resolution frame: any two of the methods, the ground truth,
a few source layers and the index maps, compared by a wipe (a vertical divider, dragged or set by the slider) or by
flipping, zoomed to fit or to 1-8 image pixels per screen pixel (scroll to pan, double-click to zoom in there).
Viewer images are JPEG (quality 92, no chroma subsampling) at full resolution up to ``viewer_max_side`` pixels;
index maps are PNG. Below it, crops placed where the methods disagree most (largest per-pixel standard deviation of
luma across the fused images, averaged over the crop window), which is where a reader wants to look.

Sections after the built-in ones are passed as ``sections=[(heading, html), ...]`` (e.g. panels of other stages);
every ``<h2>`` gets an anchor and a line in the contents at the top of the page.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
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
nav.toc{font-size:12.5px;margin:8px 0 0}nav.toc a{margin-right:14px}
.viewer{margin:6px 0 12px}
.vctl{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;font-size:12.5px;margin:0 0 6px}
.vctl select,.vctl button{font:inherit;padding:1px 4px}.vctl input[type=range]{width:180px}
.vscroll{overflow:auto;max-height:78vh;border:1px solid #c9ceda;background:#2b2f38}
.vstage{position:relative;line-height:0;user-select:none;touch-action:none;cursor:ew-resize}
.vstage img{width:100%;height:auto;display:block}
.vstage img.va{position:absolute;left:0;top:0;height:100%}
.vstage.px img{image-rendering:pixelated}
.vline{position:absolute;top:0;bottom:0;width:2px;margin-left:-1px;background:#ffd23f;pointer-events:none}
.vbox{position:relative}
.vlab{position:absolute;top:4px;z-index:2;font:12px system-ui,sans-serif;line-height:1.3;color:#fff;
background:rgba(0,0,0,.6);padding:2px 6px;pointer-events:none}.vlab-a{left:4px}.vlab-b{right:4px}
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
        sources: the stack's source images (a few of them are offered in the viewer).
    """

    dataset: str
    scene: str
    fused: Mapping[str, Path] = field(default_factory=dict)
    index_maps: Mapping[str, Path] = field(default_factory=dict)
    ground_truth: Path | None = None
    layers: int | None = None
    captions: Mapping[str, str] = field(default_factory=dict)
    sources: Sequence[Path] = ()


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


def _jpeg_uri(rgb: np.ndarray, quality: int = 92) -> str:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 RGB
        raise RuntimeError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


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


def _scene_html(
    view: SceneView, crop: int, thumb: int, *, default: str | None = None, max_side: int = 2048, source_layers: int = 4
) -> str:
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
    viewer = _viewer_html(view, (h, w), same, gt, default=default, max_side=max_side, source_layers=source_layers)
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
    return (
        f'<h3 id="{html.escape(view.dataset)}-{html.escape(view.scene)}">{title}</h3>{viewer}'
        f'<div class="scene">{"".join(figs)}</div>'
    )


def _crop_img(rgb: np.ndarray, disp: int, *, nearest: bool = False) -> str:
    if rgb.shape[0] != disp:
        interp = cv2.INTER_NEAREST if nearest or disp > rgb.shape[0] else cv2.INTER_AREA
        rgb = cv2.resize(rgb, (disp, disp), interpolation=interp)
    return f'<img src="{_png_uri(rgb)}" width="{disp}" height="{disp}" alt="">'


def _crop_fig(rgb: np.ndarray, caption: str, disp: int) -> str:
    return f"<figure>{_crop_img(rgb, disp)}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _pick_layers(n: int, k: int) -> list[int]:
    """``k`` evenly spaced indices of ``n`` layers, first and last included (all when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]


def _viewer_html(
    view: SceneView,
    frame: tuple[int, int],
    fused: Mapping[str, np.ndarray],
    gt: np.ndarray | None,
    *,
    default: str | None,
    max_side: int,
    source_layers: int,
) -> str:
    """The flip/wipe viewer of one scene: every entry drawn on the reference frame ``(h, w)``."""
    h, w = frame
    scale = min(1.0, max_side / max(h, w)) if max_side > 0 else 1.0
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def fit(rgb: np.ndarray, nearest: bool = False) -> np.ndarray:
        if rgb.shape[1::-1] == size:
            return rgb
        return cv2.resize(rgb, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    entries = [{"name": m, "src": _jpeg_uri(fit(im))} for m, im in fused.items()]
    if gt is not None:
        entries.append({"name": "ground truth", "src": _jpeg_uri(fit(gt))})
    for m, p in sorted(view.index_maps.items()):
        entries.append({"name": f"index map: {m}", "src": _png_uri(fit(_hwc(load_image(p)[0]), nearest=True))})
    sources = list(view.sources)
    for i in _pick_layers(len(sources), source_layers):
        entries.append(
            {"name": f"layer {i + 1}/{len(sources)}", "src": _jpeg_uri(fit(_hwc(load_image(sources[i])[0])))}
        )
    names = [e["name"] for e in entries]
    a = names.index(default) if default in names else 0
    b = names.index("ground truth") if gt is not None else (1 if len(names) > 1 and a != 1 else 0)
    if b == a and len(names) > 1:
        b = 1 - a if a < 2 else 0
    data = {"width": size[0], "height": size[1], "scale": scale, "a": a, "b": b, "entries": entries}
    opts = "".join(f'<option value="{i}">{html.escape(n)}</option>' for i, n in enumerate(names))
    note = f"shown at {size[0]}×{size[1]}" + (f" (source {w}×{h} downscaled)" if scale < 1 else " (full resolution)")
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        '<div class="viewer">'
        '<div class="vctl">'
        f'<label>A (left) <select class="vsel-a">{opts}</select></label>'
        f'<label>B (right) <select class="vsel-b">{opts}</select></label>'
        '<label>mode <select class="vmode"><option value="wipe">wipe</option><option value="flip">flip</option>'
        "</select></label>"
        '<label>wipe <input class="vwipe" type="range" min="0" max="100" step="0.5" value="50"></label>'
        '<button type="button" class="vflip" title="show the other image (flip mode)">flip A/B</button>'
        '<button type="button" class="vswap" title="exchange A and B">swap</button>'
        '<label>zoom <select class="vzoom"><option value="fit">fit</option><option value="1">1:1</option>'
        '<option value="2">2×</option><option value="4">4×</option><option value="8">8×</option></select></label>'
        f'<span class="meta">{note}; drag on the image moves the wipe, double-click zooms in</span>'
        "</div>"
        '<div class="vbox"><span class="vlab vlab-a"></span><span class="vlab vlab-b"></span><div class="vscroll">'
        '<div class="vstage"><img class="vb" alt="B"><img class="va" alt="A"><div class="vline"></div></div></div></div>'
        f'<script type="application/json" class="vdata">{payload}</script>'
        "</div>"
    )


_VIEWER_JS = """
(function () {
  function init(v) {
    var d = JSON.parse(v.querySelector('script.vdata').textContent), E = d.entries;
    var q = function (s) { return v.querySelector(s); };
    var selA = q('.vsel-a'), selB = q('.vsel-b'), mode = q('.vmode'), wipe = q('.vwipe'), zoom = q('.vzoom');
    var scroll = q('.vscroll'), stage = q('.vstage'), imgA = q('img.va'), imgB = q('img.vb'), line = q('.vline');
    var labA = q('.vlab-a'), labB = q('.vlab-b'), showA = true, drag = false;
    selA.value = d.a; selB.value = d.b;
    function width() {
      var z = zoom.value;
      return z === 'fit' ? Math.min(scroll.clientWidth || d.width, d.width) : d.width * Number(z);
    }
    function render() {
      var a = E[selA.value], b = E[selB.value], pos = Number(wipe.value), wiping = mode.value === 'wipe';
      if (imgA.getAttribute('src') !== a.src) imgA.src = a.src;
      if (imgB.getAttribute('src') !== b.src) imgB.src = b.src;
      stage.style.width = width() + 'px';
      stage.classList.toggle('px', zoom.value !== 'fit' && Number(zoom.value) > 1);
      imgA.style.clipPath = wiping ? 'inset(0 ' + (100 - pos) + '% 0 0)' : 'none';
      imgA.style.visibility = wiping || showA ? 'visible' : 'hidden';
      line.style.display = wiping ? 'block' : 'none';
      line.style.left = pos + '%';
      labA.textContent = 'A: ' + a.name; labB.textContent = 'B: ' + b.name;
      labA.style.opacity = wiping || showA ? 1 : 0.35; labB.style.opacity = wiping || !showA ? 1 : 0.35;
      v.dataset.state = JSON.stringify({a: a.name, b: b.name, mode: mode.value, wipe: pos, zoom: zoom.value,
        shown: wiping ? 'both' : (showA ? a.name : b.name), width: stage.getBoundingClientRect().width});
    }
    function rezoom(z, cx, cy) {  // keep the image point under (cx, cy) of the scroll box in place
      var r = scroll.getBoundingClientRect(), old = stage.getBoundingClientRect().width || 1;
      cx = cx === undefined ? r.width / 2 : cx; cy = cy === undefined ? r.height / 2 : cy;
      var fx = (scroll.scrollLeft + cx) / old, fy = (scroll.scrollTop + cy) / old;
      zoom.value = z; render();
      var now = stage.getBoundingClientRect().width;
      scroll.scrollLeft = fx * now - cx; scroll.scrollTop = fy * now - cy;
    }
    function wipeAt(e) {
      var r = stage.getBoundingClientRect();
      wipe.value = Math.max(0, Math.min(100, 100 * (e.clientX - r.left) / r.width)); render();
    }
    [selA, selB, mode, wipe].forEach(function (el) { el.addEventListener('input', render); });
    [selA, selB, mode].forEach(function (el) { el.addEventListener('change', render); });
    zoom.addEventListener('change', function () { rezoom(zoom.value); });
    q('.vflip').addEventListener('click', function () { if (mode.value !== 'flip') mode.value = 'flip';
      showA = !showA; render(); });
    q('.vswap').addEventListener('click', function () { var t = selA.value; selA.value = selB.value;
      selB.value = t; render(); });
    stage.addEventListener('pointerdown', function (e) { if (mode.value !== 'wipe') return; drag = true;
      try { stage.setPointerCapture(e.pointerId); } catch (err) { /* synthetic events have no pointer */ }
      wipeAt(e); });
    stage.addEventListener('pointermove', function (e) { if (drag) wipeAt(e); });
    stage.addEventListener('pointerup', function () { drag = false; });
    stage.addEventListener('dblclick', function (e) {
      var r = scroll.getBoundingClientRect(), z = zoom.value === 'fit' ? 1 : Math.min(8, 2 * Number(zoom.value));
      rezoom(String(z), e.clientX - r.left, e.clientY - r.top);
    });
    window.addEventListener('resize', render);
    render();
  }
  document.querySelectorAll('.viewer').forEach(init);
})();
"""


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
    sections: Sequence[tuple[str, str]] = (),
    default_method: str | None = None,
    viewer_max_side: int = 2048,
    source_layers: int = 4,
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
        sections: ``(heading, html)`` pairs appended as ``<h2>`` sections after the scenes (trusted HTML made by
            other report stages; the heading is escaped).
        default_method: the method shown first (as A) in each scene's viewer.
        viewer_max_side: longest side of the viewer images (larger frames are downscaled; 0 = never).
        source_layers: source layers offered in the viewer (evenly spaced, first and last included).

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
            '<p class="meta">seconds per stack = the whole scene as <code>stackmff fuse</code> runs it (loading, '
            "alignment, fusion, saving); peak MiB = resident memory added during the scene (external tools: their "
            "own commands' time and the tool process's peak)</p>"
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
            '<p class="meta">viewer: pick any two of the methods, the ground truth, index maps and source layers; '
            "wipe or flip between them at any zoom. Below: crops where the methods differ most; under each fused "
            "crop its index map (colour = source layer), when the method picks one layer per pixel</p>"
        )
        out += [
            _scene_html(v, crop, thumb, default=default_method, max_side=viewer_max_side, source_layers=source_layers)
            for v in scenes
        ]
    for heading, body in sections:
        out.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if scenes:
        out.append(f"<script>{_VIEWER_JS}</script>")
    out.append("</body></html>")
    return write_text(path, _with_toc("\n".join(out) + "\n"))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _with_toc(page: str) -> str:
    """Give every ``<h2>`` an id and put a line of links to them after the page's first paragraph."""
    links, seen = [], set()

    def anchor(m: re.Match) -> str:
        label = re.sub(r"<[^>]+>", "", m.group(1))
        slug = _slug(html.unescape(label))
        while slug in seen:
            slug += "-x"
        seen.add(slug)
        links.append(f'<a href="#{slug}">{label}</a>')
        return f'<h2 id="{slug}">{m.group(1)}</h2>'

    page = re.sub(r"<h2>(.*?)</h2>", anchor, page)
    if len(links) < 2:
        return page
    return page.replace("</p>", f'</p><nav class="toc">{"".join(links)}</nav>', 1)
