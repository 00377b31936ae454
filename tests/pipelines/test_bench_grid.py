"""The whole-command benchmark grid (pipelines/benchmarks/grid.py): real timings of real commands, plots, ratios."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from pipelines.benchmarks import grid
from pipelines.config import BenchParams, load_params
from stackmff.peers import get_peer


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


def test_a_run_past_its_timeout_is_killed_and_reported(tmp_path, monkeypatch):
    import sys

    r = grid.run_timed([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert r["timed_out"] and r["rc"] != 0 and r["wall_s"] < 10
    assert not grid.run_timed([sys.executable, "-c", "pass"], timeout=60)["timed_out"]
    monkeypatch.setattr(grid, "command", lambda *a: [sys.executable, "-c", "import time; time.sleep(60)"])
    res = grid.run_once("focus_measure", tmp_path, tmp_path / "o.jpg", threads="auto", beside="none", timeout=0.5)
    assert res["error"].startswith("killed after") and "--run-timeout" in res["error"]
    with pytest.raises(SystemExit) as exc:
        grid.main(["--run-timeout", "0", "--out", str(tmp_path)])
    assert exc.value.code == 2


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


def test_runs_of_one_stack_are_interleaved_across_repeats(tmp_path, monkeypatch):
    order = []

    def fake_run_once(method, stack, out, *, threads, beside, timeout, device=None):
        assert timeout == 90.0  # the grid's --run-timeout reaches every run
        assert device is None  # no GPU asked for: the default command, without --device
        order.append(method)
        if method == "bad" and order.count("bad") == 2:
            return {"error": "exit 1: boom"}
        return {"wall_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 10.0, "load": [0.5, 0.5, 0.5]}

    monkeypatch.setattr(grid, "run_once", fake_run_once)
    res = grid.run_grid(
        ["a", "b", "bad"], [2], [0.02], repeats=3, workdir=str(tmp_path), run_timeout=90.0, log=lambda *_: None
    )
    # repeat 1 of every method, then repeat 2 starting one method later, ...; a method that fails is not run again
    assert order == ["a", "b", "bad", "b", "bad", "a", "a", "b"]
    by = {r["method"]: r for r in res["rows"]}
    assert by["a"]["walls"] == by["b"]["walls"] == [1.0, 1.0, 1.0] and by["a"]["load_1min"] == [0.5] * 3
    assert "wall_s" not in by["bad"] and by["bad"]["error"] == "exit 1: boom"


def test_versus_divides_the_peers_times_by_ours_per_cell():
    cell = {"threads": "auto", "layers": 10, "megapixels": 1.0, "beside": "alone"}
    rows = [
        {**cell, "method": "stackmff_v3", "wall_s": 2.0, "cpu_s": 3.0},
        {**cell, "method": "openfocus", "wall_s": 9.0, "cpu_s": 15.0},
        {**cell, "method": "wavelet", "wall_s": 1.0, "cpu_s": 1.0},
        {**cell, "method": "focus_measure", "wall_s": 0.5, "cpu_s": 0.8},
        {**cell, "method": "enfuse", "wall_s": 1.0, "cpu_s": 1.6},
        {**cell, "method": "enfuse", "beside": "spin", "wall_s": 99.0, "cpu_s": 99.0},  # not an alone run
        {**cell, "megapixels": 0.25, "method": "wavelet", "wall_s": 1.0, "cpu_s": 1.0},  # no peer in this cell
    ]
    (v,) = grid.versus(rows, ["wavelet", "focus_measure"])
    assert (v["openfocus_over_v3_wall"], v["openfocus_over_v3_cpu"]) == (4.5, 5.0)
    assert v["fastest_classical"] == "focus_measure" and "focus_stack_over_classical_wall" not in v
    assert (v["enfuse_over_classical_wall"], v["enfuse_over_classical_cpu"]) == (2.0, 2.0)


def test_learned_methods_get_a_row_per_device_and_the_others_run_on_the_cpu(tmp_path, monkeypatch):
    calls = []

    def fake_run_once(method, stack, out, *, threads, beside, timeout, device=None):
        calls.append((method, device))
        gpu = {"gpu_peak_mb": 321.0} if device == "cuda" else {}
        return {"wall_s": 1.0, "cpu_s": 1.0, "peak_rss_mb": 10.0, "load": [0.5] * 3, **gpu}

    monkeypatch.setattr(grid, "run_once", fake_run_once)
    monkeypatch.setattr(grid, "_peer_names", lambda: {"openfocus"})
    res = grid.run_grid(
        ["stackmff_v3", "focus_measure", "openfocus"],
        [2],
        [0.02],
        device_list=["cpu", "cuda"],
        workdir=str(tmp_path),
        log=print,
    )
    assert calls == [("stackmff_v3", "cpu"), ("stackmff_v3", "cuda"), ("focus_measure", None), ("openfocus", None)]
    rows = {(r["method"], r["device"]): r for r in res["rows"]}
    # an external tool chooses its own device (OpenFocus takes the GPU when there is one)
    assert sorted(rows) == [
        ("focus_measure", "cpu"),
        ("openfocus", "own"),
        ("stackmff_v3", "cpu"),
        ("stackmff_v3", "cuda"),
    ]
    assert rows[("stackmff_v3", "cuda")]["gpu_peak_mb"] == 321.0 and "gpu_peak_mb" not in rows[("stackmff_v3", "cpu")]
    paths = grid.plot(res["rows"], tmp_path)  # V3 on each device is its own line, GPU memory beside the RSS
    assert len(paths) == 2 and all(cv2.imread(str(p)) is not None for p in paths)


def test_grid_refuses_cuda_without_a_gpu_in_one_line(tmp_path, capsys):
    if grid.gpu_info() is not None:
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as exc:
        grid.main(["--devices", "cuda", "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "torch sees no CUDA device here" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_command_adds_the_device_only_when_asked(tmp_path):
    base = grid.command("stackmff_v3", tmp_path, tmp_path / "o.jpg", "auto")
    assert "--device" not in base and "--json" not in base  # a machine without a GPU times the default command
    cpu = grid.command("stackmff_v3", tmp_path, tmp_path / "o.jpg", "auto", "cpu")
    assert cpu == [*base, "--device", "cpu"]
    cuda = grid.command("stackmff_v3", tmp_path, tmp_path / "o.jpg", "2", "cuda")
    assert cuda[-5:] == ["--threads", "2", "--device", "cuda", "--json"]  # the summary carries the GPU memory


def test_devices_resolve_auto_and_refuse_a_missing_gpu():
    gpu = {"name": "NVIDIA H100", "memory_mb": 81000}
    assert grid.devices(["auto"], None) == ["cpu"]
    assert grid.devices(["auto"], gpu) == ["cpu", "cuda"]
    assert grid.devices(["cuda", "auto"], gpu) == ["cuda", "cpu"]
    assert grid.devices(["cuda:1"], gpu) == ["cuda:1"]
    with pytest.raises(ValueError, match="no CUDA device"):
        grid.devices(["cuda"], None)
    with pytest.raises(ValueError, match="not a device"):
        grid.devices(["tpu"], gpu)


def test_run_once_reads_the_gpu_memory_from_the_commands_json_summary(tmp_path, monkeypatch):
    import sys

    # what `stackmff fuse --json` prints on CUDA, reduced to the key the grid reads
    code = "import json; print(json.dumps({'layers': 2, 'device': 'cuda:0', 'gpu_peak_mb': 812.5}, indent=2))"
    monkeypatch.setattr(grid, "command", lambda *a: [sys.executable, "-c", code, "--json"])
    r = grid.run_once("stackmff_v3", tmp_path, tmp_path / "o.jpg", threads="auto", beside="none", device="cuda")
    assert r["gpu_peak_mb"] == 812.5 and r["wall_s"] > 0
    s = grid.summarize([r, {**r, "gpu_peak_mb": 800.0}, {**r, "gpu_peak_mb": 900.0}])
    assert s["gpu_peak_mb"] == 812.5  # the median
    assert "gpu_peak_mb" not in grid.summarize([{k: v for k, v in r.items() if k != "gpu_peak_mb"}])


def test_versus_compares_openfocus_with_v3_on_its_default_device():
    cell = {"threads": "auto", "layers": 10, "megapixels": 1.0, "beside": "alone"}
    rows = [
        {**cell, "method": "stackmff_v3", "device": "cpu", "wall_s": 4.0, "cpu_s": 6.0},
        {**cell, "method": "stackmff_v3", "device": "cuda", "wall_s": 2.0, "cpu_s": 2.0},
        {**cell, "method": "openfocus", "wall_s": 8.0, "cpu_s": 8.0},
    ]
    assert grid.versus(rows, [])[0]["openfocus_over_v3_wall"] == 2.0
    assert grid.versus(rows, [], v3_device="cuda")[0]["openfocus_over_v3_wall"] == 4.0


@pytest.mark.gpu
def test_grid_has_gpu_rows_with_their_gpu_memory(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    gpu = grid.gpu_info()
    assert gpu is not None and gpu["memory_mb"] > 1000
    res = grid.run_grid(
        ["stackmff_v3"], [3], [0.25], device_list=grid.devices(["auto"], gpu), workdir=str(tmp_path), log=print
    )
    rows = {r["device"]: r for r in res["rows"]}
    assert set(rows) == {"cpu", "cuda"} and res["machine"]["gpu"]["name"] == gpu["name"]
    assert 10 < rows["cuda"]["gpu_peak_mb"] < gpu["memory_mb"] and "gpu_peak_mb" not in rows["cpu"]


@pytest.mark.skipif(not get_peer("enfuse").available(), reason="enfuse not installed")
def test_grid_times_an_installed_peer(tmp_path):
    res = grid.run_grid(["enfuse"], [2], [0.02], workdir=str(tmp_path), log=lambda *_: None)
    (row,) = res["rows"]
    assert row["wall_s"] > 0 and row["cpu_s"] > 0 and row["peak_rss_mb"] > 0, row
