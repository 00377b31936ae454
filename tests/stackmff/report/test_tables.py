"""Report tables: statistics against numpy, best-in-bold, renderers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stackmff.errors import StackMFFError
from stackmff.report import metric_tables, resource_table, select_crop, summarize, to_latex, to_markdown


def _tidy() -> pd.DataFrame:
    rows = []
    vals = {"a": [30.0, 32.0, 34.0], "b": [31.0, 31.0, 31.0]}
    for m, v in vals.items():
        for i, x in enumerate(v):
            rows += [(m, "d1", str(i), "psnr", x), (m, "d1", str(i), "mse", 10.0 - x / 10)]
    rows.append(("a", "d1", "3", "psnr", np.nan))
    return pd.DataFrame(rows, columns=["method", "dataset", "scene", "metric", "value"])


def test_summarize_matches_numpy():
    s = summarize(_tidy()).set_index(["method", "metric"])
    assert s.loc[("a", "psnr"), "mean"] == pytest.approx(32.0)
    assert s.loc[("a", "psnr"), "std"] == pytest.approx(np.std([30, 32, 34], ddof=1))
    assert s.loc[("a", "psnr"), "n"] == 3  # NaN left out


def test_best_respects_direction_and_renders_bold():
    (t,) = metric_tables(summarize(_tidy()), metrics=["psnr", "mse"], lower_is_better=["mse"])
    assert t.best.loc["a", "psnr"] and not t.best.loc["b", "psnr"]  # 32 > 31
    assert t.best.loc["a", "mse"] and not t.best.loc["b", "mse"]  # 6.8 < 6.9
    md = to_markdown(t)
    assert "| a | **32 ± 2** | **6.8 ± 0.2** |" in md and "| b | 31 | 6.9 |" in md.replace(" ± 0", "")
    tex = to_latex(t)
    assert r"\textbf{32 $\pm$ 2}" in tex and r"\begin{tabular}{lrr}" in tex


def test_resource_table():
    runs = pd.DataFrame(
        {
            "method": ["a", "a", "b"],
            "kind": "registered",
            "benchmark": "x",
            "status": "ok",
            "version": None,
            "dataset": "d",
            "scene": ["1", "2", "1"],
            "layers": [4, 4, 4],
            "height": [100, 100, 100],
            "width": [100, 100, 100],
            "seconds": [1.0, 3.0, 0.5],
            "peak_mb": [10.0, 30.0, 50.0],
        }
    )
    t = resource_table(runs)
    assert t.cells.loc["a", "peak MiB"] == "30" and t.best.loc["a", "peak MiB"]
    assert t.best.loc["b", "seconds / stack"] and t.cells.loc["a", "megapixel·layers / s"] == "0.02"


def test_bad_table_is_a_user_error():
    with pytest.raises(StackMFFError, match="columns"):
        summarize(pd.DataFrame({"method": ["a"]}))


def test_select_crop_finds_disagreement():
    a = np.zeros((80, 80, 3), np.uint8)
    b = a.copy()
    b[60:70, 50:60] = 200
    y, x, s = select_crop([a, b], 20)
    assert s == 20 and y <= 60 and y + s >= 70 and x <= 50 and x + s >= 60
