"""The report page in a real browser: headless Chromium renders it, every image loads, wide tables scroll inside
their container (with the method column sticky) instead of widening the page. Skipped without a Chromium binary."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import cv2
import matplotlib
import numpy as np
import pandas as pd
import pytest

from stackmff.io import save_image
from stackmff.report import metric_tables, summarize
from stackmff.report.html import SceneView, build_html

matplotlib.use("Agg")

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = [
    pytest.mark.slow,  # a browser start is several seconds on the 2-core machine
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium / google-chrome binary"),
]

# probes run after load; their result replaces the page title's text so --dump-dom carries it out
_PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const wraps = [...document.querySelectorAll('.table-wrap')];
  const wide = wraps.find(w => w.scrollWidth > w.clientWidth);
  let sticky = null;
  if (wide) {
    const cell = wide.querySelector('tbody td');
    const before = cell.getBoundingClientRect().left;
    wide.scrollLeft = 500;
    sticky = {moved: wide.scrollLeft, shift: cell.getBoundingClientRect().left - before};
  }
  const probe = {
    images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    wraps: wraps.length,
    wide: wraps.filter(w => w.scrollWidth > w.clientWidth).length,
    page_overflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    sticky: sticky,
  };
  const pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script></body>"""


def _chromium(*args: str) -> subprocess.CompletedProcess:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1000,1400"]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("page")
    rng = np.random.default_rng(0)
    metrics = [f"metric_{i:02d}" for i in range(16)]  # far wider than the 1000 px window
    rows = [
        (m, "d1", str(s), k, float(rng.normal(10 + i, 1)))
        for i, m in enumerate(["alpha", "beta", "gamma"])
        for s in range(3)
        for k in metrics
    ]
    tables = metric_tables(summarize(pd.DataFrame(rows, columns=["method", "dataset", "scene", "metric", "value"])))
    fig = matplotlib.pyplot.figure(figsize=(4, 3))
    fig.gca().bar([0, 1, 2], [1, 3, 2])
    fig.savefig(tmp / "bars.png")
    matplotlib.pyplot.close(fig)
    img = np.zeros((3, 64, 64), np.float32)
    img[:, 16:48, 16:48] = 1.0
    save_image(tmp / "gt.png", img)
    save_image(tmp / "a.png", np.clip(img + 0.2 * rng.random(img.shape, dtype=np.float32), 0, 1))
    save_image(tmp / "b.png", 1.0 - img)
    view = SceneView("d1", "s0", fused={"alpha": tmp / "a.png", "beta": tmp / "b.png"}, ground_truth=tmp / "gt.png")
    html = build_html(
        tmp / "index.html", title="Probe report", tables=tables, plots={"bars": tmp / "bars.png"}, scenes=[view]
    )
    probe = tmp / "probe.html"
    probe.write_text(html.read_text().replace("</body>", _PROBE))
    return tmp, html, probe


def test_page_renders_images_load_and_wide_tables_scroll_in_place(page):
    _, _, probe = page
    res = _chromium("--virtual-time-budget=5000", "--dump-dom", probe.as_uri())
    assert res.returncode == 0, res.stderr[-500:]
    m = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout)
    assert m, res.stdout[-500:]
    p = json.loads(m.group(1).replace("&quot;", '"'))
    # plot + viewer A and B + overview + gt crop + 2 fused crops, all decoded
    assert p["images"] == 7 and p["loaded"] == p["images"]
    assert p["wraps"] == 1 and p["wide"] == 1  # the 16-metric table overflows its container ...
    assert p["page_overflow"] <= 0  # ... but not the page
    assert p["sticky"]["moved"] > 0 and abs(p["sticky"]["shift"]) < 1  # scrolled, the method column stayed put
    assert "Probe report" in res.stdout and "metric_15" in res.stdout


def test_screenshot_is_not_blank(page):
    tmp, html, _ = page
    shot = tmp / "shot.png"
    res = _chromium(f"--screenshot={shot}", html.as_uri())
    assert res.returncode == 0 and shot.is_file(), res.stderr[-500:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (1400, 1000)
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    assert (gray < 128).mean() > 0.01  # text, table lines and images drawn, not a white page
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50  # colours of the plot and the crops
