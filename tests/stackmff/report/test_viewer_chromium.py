"""The per-scene comparison viewer in a real browser: headless Chromium loads the report page, a probe script drives
the viewer (switch method, move the wipe by slider and by dragging, zoom, flip) and reports its state, and a
screenshot is checked pixel by pixel (A left of the wipe line, B right of it). Skipped without a Chromium binary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from stackmff.io import save_image
from stackmff.report.html import SceneView, build_html

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = [
    pytest.mark.slow,  # a browser start is several seconds on the 2-core machine
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium / google-chrome binary"),
]

_DRIVE = """<script>
window.addEventListener('load', () => {
  const v = document.querySelector('.viewer');
  const st = () => JSON.parse(v.dataset.state);
  const q = s => v.querySelector(s);
  const fire = (el, type) => el.dispatchEvent(new Event(type, {bubbles: true}));
  const names = [...q('.vsel-a').options].map(o => o.textContent);
  const r = {names: names, initial: st()};
  q('.vsel-a').value = names.indexOf('beta'); fire(q('.vsel-a'), 'change');
  r.switched = st();
  r.src_ok = q('img.va').src === JSON.parse(q('script.vdata').textContent).entries[names.indexOf('beta')].src;
  q('.vwipe').value = 30; fire(q('.vwipe'), 'input');
  r.slider = st(); r.clip = getComputedStyle(q('img.va')).clipPath;
  const box = q('.vstage').getBoundingClientRect();
  const at = f => ({clientX: box.left + f * box.width, clientY: box.top + 5, pointerId: 1, bubbles: true});
  q('.vstage').dispatchEvent(new PointerEvent('pointerdown', at(0.8)));
  q('.vstage').dispatchEvent(new PointerEvent('pointermove', at(0.7)));
  q('.vstage').dispatchEvent(new PointerEvent('pointerup', at(0.7)));
  r.dragged = st();
  q('.vzoom').value = '4'; fire(q('.vzoom'), 'change');
  r.zoomed = st();
  q('.vflip').click(); r.flip1 = st(); r.a_visible = getComputedStyle(q('img.va')).visibility;
  q('.vflip').click(); r.flip2 = st();
  q('.vswap').click(); r.swapped = st();
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(r);
  document.body.appendChild(pre);
});
</script></body>"""

# for the screenshot: A = alpha (red), B = ground truth (white square on black), wipe at 40 %, zoom 4x
_POSE = """<script>
window.addEventListener('load', () => {
  const v = document.querySelector('.viewer'), q = s => v.querySelector(s);
  const names = [...q('.vsel-a').options].map(o => o.textContent);
  q('.vsel-a').value = names.indexOf('alpha'); q('.vsel-b').value = names.indexOf('ground truth');
  q('.vsel-b').dispatchEvent(new Event('change'));
  q('.vwipe').value = 40; q('.vwipe').dispatchEvent(new Event('input'));
  q('.vzoom').value = '4'; q('.vzoom').dispatchEvent(new Event('change'));
  v.scrollIntoView();
});
</script></body>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,900"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("viewer")
    gt = np.zeros((3, 96, 96), np.float32)
    gt[:, 24:72, 24:72] = 1.0
    red = np.zeros_like(gt)
    red[0] = 0.9
    blue = np.zeros_like(gt)
    blue[2] = 0.9
    save_image(tmp / "gt.png", gt)
    save_image(tmp / "alpha.png", red)
    save_image(tmp / "beta.png", blue)
    layers = []
    for i in range(6):
        save_image(tmp / "stack" / f"{i}.png", np.full_like(gt, i / 5))
        layers.append(tmp / "stack" / f"{i}.png")
    view = SceneView(
        "d1",
        "s0",
        fused={"alpha": tmp / "alpha.png", "beta": tmp / "beta.png"},
        ground_truth=tmp / "gt.png",
        sources=layers,
    )
    html = build_html(
        tmp / "index.html",
        title="Viewer",
        scenes=[view],
        default_method="alpha",
        sections=[("Extra panel", "<p>added by another stage</p>")],
    )
    return tmp, html


def test_viewer_offers_methods_gt_and_layers_and_starts_on_default_vs_gt(page):
    _, html = page
    text = html.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: no CDN, no external request
    assert '<h2 id="extra-panel">Extra panel</h2>' in text and 'href="#extra-panel"' in text  # added sections
    names = re.findall(r'<option value="\d+">([^<]+)</option>', text.split('class="vsel-b"')[0])
    # 6 layers -> 4 evenly spaced ones, first and last included
    assert names == ["alpha", "beta", "ground truth", "layer 1/6", "layer 3/6", "layer 4/6", "layer 6/6"]


def test_viewer_switches_wipes_zooms_and_flips_in_chromium(page):
    tmp, html = page
    probe = tmp / "drive.html"
    probe.write_text(html.read_text().replace("</body>", _DRIVE))
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert res.returncode == 0, res.stderr[-500:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout)
    assert m, res.stdout[-800:]
    r = json.loads(m.group(1).replace("&quot;", '"'))
    assert r["initial"]["a"] == "alpha" and r["initial"]["b"] == "ground truth" and r["initial"]["mode"] == "wipe"
    assert r["switched"]["a"] == "beta" and r["src_ok"]
    assert r["slider"]["wipe"] == 30 and r["clip"] == "inset(0px 70% 0px 0px)"
    assert r["dragged"]["wipe"] == pytest.approx(70, abs=1)  # pressed at 80 %, dragged to 70 %
    assert r["initial"]["width"] == 96 and r["zoomed"]["width"] == 4 * 96  # fit = full size here; 4x
    assert r["flip1"]["mode"] == "flip" and r["flip1"]["shown"] == "ground truth" and r["a_visible"] == "hidden"
    assert r["flip2"]["shown"] == "beta"
    assert r["swapped"]["a"] == "ground truth" and r["swapped"]["b"] == "beta"


def test_viewer_screenshot_shows_a_left_of_the_wipe_and_b_right(page):
    tmp, html = page
    posed = tmp / "posed.html"
    posed.write_text(html.read_text().replace("</body>", _POSE))
    shot = tmp / "viewer.png"
    res = _chromium("--virtual-time-budget=5000", f"--screenshot={shot}", posed.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-500:]
    img = cv2.imread(str(shot))[:, :, ::-1].astype(int)  # RGB
    red = (img[:, :, 0] > 200) & (img[:, :, 1] < 60) & (img[:, :, 2] < 60)
    white = (img > 235).all(axis=2)
    yellow = (img[:, :, 0] > 230) & (img[:, :, 1] > 180) & (img[:, :, 2] < 110)  # the wipe line
    line_rows = np.nonzero(yellow.sum(axis=1) > 0)[0]
    assert len(line_rows), "no wipe line drawn"
    top, bottom = line_rows.min(), line_rows.max()  # the line spans the image (the crops below have none)
    assert bottom - top + 1 == pytest.approx(4 * 96, abs=3)  # zoom 4x, full height visible
    _, xs = np.nonzero(red[top : bottom + 1])
    assert len(xs) > 1000, "A (red) not drawn"
    left = xs.min()
    line_x = np.median(np.nonzero(yellow[top : bottom + 1])[1])
    assert line_x - left == pytest.approx(0.4 * 4 * 96, abs=3)  # the wipe sits at 40 %
    assert xs.max() < line_x + 2  # A (red) only left of the line
    row = (top + bottom) // 2  # through the GT's white square (rows 24-72 of 96)
    right = np.nonzero(white[row, left : left + 4 * 96])[0] + left  # inside the image (the page margin is white)
    assert len(right) and right.min() > line_x and right.max() <= left + 72 * 4 + 2  # GT square right of the line
    cv2.imwrite(str(tmp / "viewer_rgb.png"), img[:, :, ::-1].astype(np.uint8))
