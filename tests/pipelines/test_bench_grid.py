"""The whole-command benchmark grid (pipelines/benchmarks/grid.py): real timings of real commands, plots, ratios."""

from __future__ import annotations

import json

import cv2
import numpy as np

from pipelines.benchmarks import grid
from pipelines.config import BenchParams, load_params


def test_stack_layers_are_focused_at_different_depths(tmp_path):
    h, w = grid.write_stack(tmp_path, 3, 0.05)
    layers = [cv2.imread(str(tmp_path / f"{k:02d}.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float32) for k in range(3)]
    assert all(x.shape == (h, w) for x in layers) and abs(h * w / 1e6 - 0.05) < 0.01
    sharp = [np.abs(cv2.Laplacian(x, cv2.CV_32F)) for x in layers]
    # each layer is the sharpest of the three somewhere, and no layer is the sharpest everywhere
    best = np.argmax(np.stack([cv2.blur(s, (15, 15)) for s in sharp]), axis=0)
    shares = np.bincount(best.ravel(), minlength=3) / best.size
    assert (shares > 0.05).all(), shares


def test_grid_times_whole_commands_and_plots(tmp_path):
    res = grid.run_grid(["focus_measure"], [2], [0.05], repeats=2, workdir=str(tmp_path), log=lambda *_: None)
    (row,) = res["rows"]
    assert row["method"] == "focus_measure" and row["beside"] == "alone"
    assert 0 < row["cpu_s"] < 60 and 0 < row["wall_s"] < 120 and len(row["walls"]) == 2
    assert 20 < row["peak_rss_mb"] < 2000  # an interpreter with numpy/OpenCV, not the parent's memory
    assert row["mp_layers_per_s"] == round(2 * row["height"] * row["width"] / 1e6 / row["wall_s"], 3)
    assert res["machine"]["cpu_count"] >= 1 and len(res["machine"]["loadavg"]) == 3
    paths = grid.plot(res["rows"], tmp_path)
    assert [p.name for p in paths] == ["grid_vs_n.png", "grid_vs_mp.png"]
    assert all(cv2.imread(str(p)) is not None for p in paths)
    json.dumps(res)  # what the stage writes


def test_a_failing_command_is_reported_not_timed(tmp_path):
    res = grid.run_grid(["no_such_method"], [2], [0.02], workdir=str(tmp_path), log=lambda *_: None)
    (row,) = res["rows"]
    assert "wall_s" not in row and "unknown method" in row["error"]


def test_ratios_pair_each_cell_with_its_alone_run():
    base = {"method": "m", "threads": "auto", "layers": 2, "megapixels": 1.0}
    rows = [
        {**base, "beside": "alone", "wall_s": 2.0, "cpu_s": 4.0},
        {**base, "beside": "spin", "wall_s": 3.0, "cpu_s": 4.4},
        {**base, "threads": "2", "beside": "spin", "wall_s": 9.0, "cpu_s": 9.0},  # no alone run: no ratio
    ]
    (r,) = grid.ratios(rows)
    assert (r["wall_ratio"], r["cpu_ratio"], r["beside"]) == (1.5, 1.1, "spin")


def test_paper_profile_runs_the_full_grid(tmp_path):
    import shutil

    from pipelines.profiles import apply_profile, load_profile

    params = tmp_path / "params.yaml"
    shutil.copyfile(grid.ROOT / "params.yaml", params)
    small = load_params(params, "bench")
    apply_profile(load_profile("paper", benchmark_root=tmp_path), params)
    full = load_params(params, "bench")
    assert full.layers == [2, 5, 10, 25, 50] and full.megapixels == [0.25, 1, 4, 12, 24] and full.repeats >= 3
    assert len(small.layers) * len(small.megapixels) <= 4  # the default stage stays small (minutes on 2 cores)


def test_bench_params_default_and_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("bench:\n  layers: [2]\n  megapixels: [0.1]\n")
    b = load_params(p, "bench")
    assert (b.layers, b.megapixels, b.repeats) == ([2], [0.1], BenchParams().repeats)
