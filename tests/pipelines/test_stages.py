"""Stage run() functions on tiny fixtures in tmp_path."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from pipelines.config import (
    BaseParams,
    EvaluateParams,
    FuseParams,
    PrepareParams,
    ReportParams,
    SplitParams,
    SynthesizeParams,
)
from pipelines.stages import evaluate, fuse, prepare, report, synthesize
from stackmff.errors import StackMFFError
from stackmff.io import load_image, save_image
from stackmff.peers import get_peer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    sp = SynthesizeParams(benchmark=SplitParams(scenes=2, size=48, layers=[3, 5], datasets={"proc": 0, "proc_bad": 1}))
    synthesize.run(sp, BaseParams(seed=3), "benchmark", root / "depth", root / "synthetic")
    return root / "synthetic"


def test_synthesize_writes_benchmark_tree_with_ground_truth(bench):
    info = json.loads((bench / "synthesis.json").read_text())
    assert info["datasets"]["proc"]["layers"] == [3, 5]
    assert info["datasets"]["proc_bad"]["layers"] == [4, 6]  # one invalid layer added per stack
    gt = np.load(bench / "proc" / "focus_index_gt" / "0001.npy")
    assert gt.shape == (48, 48) and gt.min() >= 0 and gt.max() < 5
    assert len(list((bench / "proc" / "dof_stack" / "0001").glob("*.png"))) == 5
    aif, _ = load_image(bench / "proc" / "AiF" / "0000.png")
    assert aif.shape == (3, 48, 48)


def test_synthesize_train_uses_upstream_layout(tmp_path):
    sp = SynthesizeParams(train=SplitParams(scenes=1, size=32, layers=[2]))
    synthesize.run(sp, BaseParams(), "train", tmp_path / "depth", tmp_path / "train")
    assert (tmp_path / "train" / "procedural" / "TR" / "focus_stack" / "0000" / "01.png").is_file()
    assert (tmp_path / "train" / "procedural" / "TR" / "focus_index_gt" / "0000.npy").is_file()


def test_synthesize_rejects_bad_layers(tmp_path):
    with pytest.raises(StackMFFError, match="layers"):
        synthesize.run(
            SynthesizeParams(benchmark=SplitParams(layers=[1])), BaseParams(), "benchmark", tmp_path, tmp_path / "o"
        )


def test_fuse_registered_method_records_runtime_and_gathers_sources(bench, tmp_path):
    runs = tmp_path / "runs.json"
    s = fuse.run(FuseParams(), "focus_measure", bench, tmp_path / "out", runs)
    assert s["status"] == "ok" and len(s["scenes"]) == 4
    rec = s["scenes"][0]
    assert rec["seconds"] > 0 and rec["peak_mb"] >= 0 and rec["layers"] == 3
    fused, _ = load_image(tmp_path / "out" / "proc" / "0000.png")
    imap, _ = load_image(tmp_path / "out" / "proc" / "index_maps" / "0000.png")
    assert fused.shape == (3, 48, 48) and (tmp_path / "out" / "proc" / "index_maps" / "0000_preview.png").is_file()
    # an index-map method copies source pixels: every fused pixel equals the pixel of its chosen layer
    idx = np.rint(imap[0] * 65535).astype(int)
    layers = np.stack([load_image(p)[0] for p in sorted((bench / "proc" / "dof_stack" / "0000").glob("*.png"))])
    picked = np.take_along_axis(layers, idx[None, None].repeat(3, 1), 0)[0]
    assert np.abs(picked - fused).max() <= 1 / 255 + 1e-6
    assert json.loads(runs.read_text())["method"] == "focus_measure"


def test_fuse_absent_tool_and_imported(bench, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    s = fuse.run(FuseParams(), "focus_stack", bench, tmp_path / "fs", tmp_path / "fs.json")
    assert s["status"] == "absent" and s["scenes"] == [] and "focus-stack" in s["missing"]
    # imported results: only one scene present -> partial, and the image is re-encoded unchanged
    img = np.random.default_rng(0).random((3, 48, 48), dtype=np.float32)
    save_image(tmp_path / "imp" / "zerene" / "proc" / "0001.png", img)
    s = fuse.run(FuseParams(), "zerene", bench, tmp_path / "zo", tmp_path / "z.json", imported=tmp_path / "imp")
    assert s["status"] == "partial" and s["kind"] == "imported"
    assert [r["status"] for r in s["scenes"]].count("ok") == 1
    back, _ = load_image(tmp_path / "zo" / "proc" / "0001.png")
    assert np.abs(back - load_image(tmp_path / "imp" / "zerene" / "proc" / "0001.png")[0]).max() == 0


def test_fuse_unknown_method_is_a_user_error(bench, tmp_path):
    with pytest.raises(StackMFFError, match="unknown method"):
        fuse.run(FuseParams(), "no_such_method", bench, tmp_path / "o", tmp_path / "r.json")


@pytest.mark.skipif(not get_peer("enfuse").available(), reason="enfuse or align_image_stack not installed")
def test_fuse_enfuse_for_real(bench, tmp_path):
    s = fuse.run(FuseParams(), "enfuse", bench, tmp_path / "o", tmp_path / "r.json")
    assert s["status"] == "ok" and s["version"].startswith("enfuse")
    assert all(r["peak_mb"] > 0 for r in s["scenes"])
    assert load_image(tmp_path / "o" / "proc_bad" / "0000.png")[0].shape == (3, 48, 48)


@pytest.mark.skipif(not get_peer("focus_stack").available(), reason="focus-stack not installed")
def test_fuse_focus_stack_for_real(bench, tmp_path):
    s = fuse.run(FuseParams(), "focus_stack", bench, tmp_path / "o", tmp_path / "r.json")
    assert s["status"] == "ok" and s["version"].startswith("focus-stack")
    assert all(r["peak_mb"] > 0 and r["seconds"] > 0 for r in s["scenes"])
    img = load_image(tmp_path / "o" / "proc_bad" / "0000.png")[0]
    # its own alignment may crop a few border pixels of the 48 x 48 stack
    assert img.shape[0] == 3 and 40 <= img.shape[1] <= 48 and 40 <= img.shape[2] <= 48 and 0.05 < img.mean() < 0.95


def test_prepare_copies_and_downscales(tmp_path):
    src = tmp_path / "samples" / "s1"
    for i in range(3):
        save_image(src / f"{i}.png", np.full((3, 40, 80), i / 3, np.float32))
    prepare.run(PrepareParams(dataset="samples"), tmp_path / "samples", tmp_path / "out")
    files = sorted((tmp_path / "out" / "samples" / "dof_stack" / "s1").iterdir())
    assert [f.read_bytes() for f in files] == [(src / f"{i}.png").read_bytes() for i in range(3)]
    prepare.run(PrepareParams(dataset="d", max_side=20), tmp_path / "samples", tmp_path / "small")
    assert load_image(tmp_path / "small" / "d" / "dof_stack" / "s1" / "00.png")[0].shape == (3, 10, 20)
    (tmp_path / "one" / "s").mkdir(parents=True)
    save_image(tmp_path / "one" / "s" / "0.png", np.zeros((3, 4, 4), np.float32))
    with pytest.raises(StackMFFError, match="no stack folders"):
        prepare.run(PrepareParams(), tmp_path / "one", tmp_path / "x")


def test_evaluate_then_report(bench, tmp_path):
    fp = FuseParams()
    for m in ("focus_measure", "laplacian_pyramid"):
        fuse.run(fp, m, bench, tmp_path / "fused" / m / "synthetic", tmp_path / "runs" / m / "synthetic.json")
        evaluate.run(
            EvaluateParams(metrics=["psnr", "ssim", "qabf", "sharpness_ratio"]),
            m,
            bench,
            tmp_path / "fused" / m / "synthetic",
            tmp_path / "metrics" / m / "synthetic.csv",
        )
    df = pd.read_csv(tmp_path / "metrics" / "focus_measure" / "synthetic.csv", dtype={"scene": str})
    assert set(df["metric"]) == {"psnr", "ssim", "qabf", "sharpness_ratio"} and len(df) == 16
    rp = ReportParams(metrics=["psnr", "ssim", "qabf"], primary={"default": "psnr"}, max_scenes=2)
    grid = tmp_path / "rep" / "bench"  # what the bench stage writes: shown as a section of plots + a machine note
    grid.mkdir(parents=True)
    versus = {"layers": 10, "megapixels": 1.0, "openfocus_over_v3_wall": 4.5, "openfocus_over_v3_cpu": 5.0}
    versus |= {"fastest_classical": "wavelet", "enfuse_over_classical_wall": 2.0}
    only_enfuse = {"layers": 3, "megapixels": 1.0, "fastest_classical": "wavelet", "enfuse_over_classical_wall": 1.9}
    grid_json = {"machine": {"cpu": "TestCPU 9000", "cpu_count": 2}, "rows": [], "versus": [versus, only_enfuse]}
    (grid / "grid.json").write_text(json.dumps(grid_json))
    shutil.copyfile(tmp_path / "fused" / "focus_measure" / "synthetic" / "proc" / "0000.png", grid / "grid_vs_n.png")
    summary = report.run(
        rp, tmp_path / "metrics", tmp_path / "runs", tmp_path / "fused", bench.parent, tmp_path / "rep"
    )
    mean_psnr = df[(df.metric == "psnr") & (df.dataset == "proc")]["value"].mean()
    assert summary["proc"]["focus_measure"]["psnr"] == pytest.approx(mean_psnr, abs=1e-4)
    # DVC metrics: headline numbers only (psnr, ssim), one small file per dataset and method
    assert set(summary["proc"]["focus_measure"]) == {"psnr", "ssim"}
    on_disk = json.loads((tmp_path / "rep" / "summary" / "proc" / "focus_measure.json").read_text())
    assert on_disk == summary["proc"]["focus_measure"]
    assert sorted(p.name for p in (tmp_path / "rep" / "summary" / "proc").iterdir()) == [
        "focus_measure.json",
        "laplacian_pyramid.json",
    ]
    # dvc plots data: means per method, and per-scene differences against report.default_method
    means = json.loads((tmp_path / "rep" / "plots" / "dvc" / "means" / "proc.psnr.json").read_text())
    assert {r["method"]: r["mean"] for r in means} == {m: v["psnr"] for m, v in summary["proc"].items()}
    assert not (tmp_path / "rep" / "plots" / "dvc" / "paired").exists()  # stackmff_v3 (the default) not evaluated
    rp2 = ReportParams(metrics=["psnr", "ssim", "qabf"], headline=["psnr"], default_method="focus_measure")
    report.run(rp2, tmp_path / "metrics", tmp_path / "runs", tmp_path / "fused", bench.parent, tmp_path / "rep")
    lp = pd.read_csv(tmp_path / "metrics" / "laplacian_pyramid" / "synthetic.csv", dtype={"scene": str})
    want = (
        lp[(lp.metric == "psnr") & (lp.dataset == "proc")].set_index("scene")["value"]
        - df[(df.metric == "psnr") & (df.dataset == "proc")].set_index("scene")["value"]
    )
    paired = json.loads((tmp_path / "rep" / "plots" / "dvc" / "paired" / "proc.psnr.json").read_text())
    assert {r["scene"]: r["delta"] for r in paired} == pytest.approx(want.to_dict(), abs=1e-4)
    assert {r["method"] for r in paired} == {"laplacian_pyramid"}
    assert (tmp_path / "rep" / "plots" / "paired_psnr.png").is_file()
    assert json.loads((tmp_path / "rep" / "summary" / "proc" / "focus_measure.json").read_text()).keys() == {"psnr"}
    for f in (
        "index.html",
        "tables/quality.md",
        "tables/quality.tex",
        "tables/quality.csv",
        "tables/resources.md",
        "plots/bars_psnr.png",
        "plots/layers_proc.png",
    ):
        assert (tmp_path / "rep" / f).is_file(), f
    html = (tmp_path / "rep" / "index.html").read_text()
    assert 'src="http' not in html and html.count("data:image/png;base64,") > 6
    assert "speed/memory grid: whole command vs N" in html and "TestCPU 9000" in html
    assert "OpenFocus / V3 wall 4.5x, CPU 5.0x; enfuse / wavelet wall 2.0x" in html
    assert "N = 3 at 1 MP, same run: enfuse / wavelet wall 1.9x." in html  # no OpenFocus in that cell: no KeyError


def test_peers_stage_records_tool_versions_so_dvc_sees_installs(tmp_path):
    from pipelines.stages import peers

    fake = [sys.executable, "-c", "print('enfuse 9.9 (test double of the version command)')"]
    # the command is the interpreter too, so the result does not depend on which tools this machine has installed
    double = {"version": fake, "command": [sys.executable, "{output}", "{inputs}"], "align": []}
    params = FuseParams(methods=["wavelet", "enfuse"], options={"enfuse": double})
    out = tmp_path / "peers"
    out.mkdir()
    (out / "removed_method.json").write_text("{}")
    status = peers.run(params, out)
    assert json.loads((out / "wavelet.json").read_text()) == {"method": "wavelet", "kind": "registered"}
    assert status["enfuse"]["version"].startswith("enfuse 9.9")
    assert json.loads((out / "enfuse.json").read_text())["kind"] == "external"
    assert sorted(p.name for p in out.iterdir()) == ["enfuse.json", "wavelet.json"]  # stale file removed
    before = (out / "enfuse.json").read_bytes()
    peers.run(params, out)
    assert (out / "enfuse.json").read_bytes() == before  # same machine, same bytes: no spurious re-runs
    gone = {"command": ["no-such-tool-xyz", "-o", "{output}", "{inputs}"]}  # as if enfuse were not installed
    assert peers.run(FuseParams(methods=["enfuse"], options={"enfuse": gone}), out)["enfuse"]["version"] == "absent"
    with pytest.raises(StackMFFError, match="unknown"):
        peers.run(FuseParams(methods=["no_such_method"]), out)


def test_report_puts_blur_check_under_crops_of_scenes_without_ground_truth(tmp_path):
    from stackmff.report import SceneView, build_html

    tidy = pd.DataFrame(
        {
            "method": ["v3", "v3", "v3", "lp", "lp"],
            "dataset": ["samples"] * 5,
            "scene": ["pcb"] * 5,
            "metric": ["sharpness_ratio", "blurred_share", "ghost_share", "sharpness_ratio", "psnr"],
            "value": [0.97, 0.012, 0.0, float("nan"), 30.0],
        }
    )
    caps = report._blur_captions(tidy, "samples", "pcb")
    assert caps == {"v3": "sharpness 0.97 · blurred 1% · extra edges 0%"}  # NaN values and other metrics left out
    assert report._blur_captions(tidy, "samples", "ring") == {}
    img = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    for m in ("v3", "lp"):
        save_image(tmp_path / f"{m}.png", img)
    view = SceneView("samples", "pcb", {m: tmp_path / f"{m}.png" for m in ("v3", "lp")}, captions=caps)
    build_html(tmp_path / "index.html", title="t", scenes=[view], crop=16)
    assert "sharpness 0.97 · blurred 1% · extra edges 0%" in (tmp_path / "index.html").read_text()


def test_a_labelled_run_is_a_registered_method_with_its_own_options_and_index_errors(bench, tmp_path):
    """fuse --as: one registered method reported twice (the fuse_upstream family); index errors vs focus_index_gt."""
    fp = FuseParams(options={"focus_measure_w9": {"window": 9}})
    runs = tmp_path / "runs.json"
    s = fuse.run(fp, "focus_measure", bench, tmp_path / "f9", runs, label="focus_measure_w9")
    assert (s["method"], s["base_method"], s["options"]) == ("focus_measure_w9", "focus_measure", {"window": 9})
    plain = fuse.run(FuseParams(), "focus_measure", bench, tmp_path / "f", tmp_path / "p.json")
    assert "base_method" not in plain
    assert {r["method"] for r in s["scenes"]} == {"focus_measure_w9"}  # records carry the label, not the base
    from stackmff.report.tables import read_runs

    assert set(read_runs([runs])["method"]) == {"focus_measure_w9"}  # the report's runtime table keeps the label
    a = load_image(tmp_path / "f9" / "proc" / "0000.png")[0]
    b = load_image(tmp_path / "f" / "proc" / "0000.png")[0]
    assert np.abs(a - b).max() > 0  # the label's options were used
    df = evaluate.run(
        EvaluateParams(metrics=["psnr", "index_rmse", "index_mae"]),
        "focus_measure_w9",
        bench,
        tmp_path / "f9",
        tmp_path / "m.csv",
    )
    assert set(df["method"]) == {"focus_measure_w9"} and set(df["metric"]) == {"psnr", "index_rmse", "index_mae"}
    # independent check of one value: RMSE of index / (N - 1) against the synthesis' ground-truth index
    imap = cv2.imread(str(tmp_path / "f9" / "proc" / "index_maps" / "0001.png"), cv2.IMREAD_UNCHANGED).astype(float)
    gt = np.load(bench / "proc" / "focus_index_gt" / "0001.npy").astype(float)
    n = len(list((bench / "proc" / "dof_stack" / "0001").glob("*.png")))
    want = np.sqrt(np.mean(((imap - gt) / (n - 1)) ** 2))
    got = df[(df.dataset == "proc") & (df.scene == "0001") & (df.metric == "index_rmse")]["value"].item()
    assert got == pytest.approx(want, rel=1e-9) and 0 < got < 0.5


def test_every_upstream_run_uses_the_upstream_preset():
    """fuse.upstream methods are reported as <method>_upstream: their options must select the upstream preset, in the
    default params and in every profile (a profile replacing fuse.options would otherwise run the default)."""
    from pipelines.config import load_yaml

    default = load_yaml(ROOT / "params.yaml")["fuse"]
    assert default["upstream"] == ["stackmff_v3"]
    configs = [("params.yaml", default["options"])]
    for prof in sorted((ROOT / "pipelines" / "profiles").glob("*.yaml")):
        opts = (load_yaml(prof).get("set") or {}).get("fuse.options")
        if opts is not None:
            configs.append((prof.name, opts))
    for name, opts in configs:
        for m in default["upstream"]:
            assert opts.get(f"{m}_upstream", {}).get("preset") == "upstream", name
