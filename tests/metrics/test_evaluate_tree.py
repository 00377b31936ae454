"""evaluate_tree / write_table / ``stackmff evaluate`` on a tiny benchmark tree built in tmp_path."""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np
import pandas as pd
import pytest
from _metric_helpers import blur, two_focus
from skimage import data

from metrics import psnr, qabf, scd
from metrics.depth_errors import index_map_errors
from metrics.evaluate import COLUMNS, METRICS, evaluate_images, write_table
from stackmff.benchmark import evaluate_tree
from stackmff.cli import main
from stackmff.errors import StackMFFError

FAST = ["psnr_gray8", "ssim_gray8", "psnr", "qabf", "mi", "scd", "sf", "halo"]


def _write(path, chw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = np.rint(chw * 255).astype(np.uint8).transpose(1, 2, 0)
    assert cv2.imwrite(str(path), cv2.cvtColor(u8, cv2.COLOR_RGB2BGR))


@pytest.fixture
def tree(tmp_path):
    """bench/Synth (stacks with AiF ground truth, scene s2 has no fused result), bench/Pairs (A/B), fused/."""
    aif = data.astronaut()[60:188, 150:278].transpose(2, 0, 1) / 255.0
    a, b = two_focus(aif)
    c = blur(aif, 2.0)
    bench, fused = tmp_path / "bench", tmp_path / "fused"
    for scene in ("s1", "s2"):
        _write(bench / "Synth" / "dof_stack" / scene / "0.png", a)
        _write(bench / "Synth" / "dof_stack" / scene / "1.png", b)
        _write(bench / "Synth" / "dof_stack" / scene / "2.png", c)
        _write(bench / "Synth" / "AiF" / f"{scene}.png", aif)
    _write(bench / "Pairs" / "A" / "p1.png", a)
    _write(bench / "Pairs" / "B" / "p1.png", b)
    _write(fused / "Synth" / "s1.png", aif)
    _write(fused / "Pairs" / "p1.png", (a + b) / 2)
    q = lambda x: np.rint(x * 255) / 255  # noqa: E731 - what the 8-bit files hold
    return {"bench": bench, "fused": fused, "aif": q(aif), "a": q(a), "b": q(b), "c": q(c), "avg": q((a + b) / 2)}


def test_rows_columns_and_values(tree, caplog):
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        df = evaluate_tree(tree["fused"], benchmark_root=tree["bench"], method="m1", metrics=FAST)
    assert tuple(df.columns) == COLUMNS
    assert set(df["method"]) == {"m1"}
    assert set(zip(df["dataset"], df["scene"])) == {("Synth", "s1"), ("Pairs", "p1")}
    assert "Synth/s2" in caplog.text  # missing fused result reported, not silently dropped
    s1 = df[df.scene == "s1"].set_index("metric")["value"]
    p1 = df[df.scene == "p1"].set_index("metric")["value"]
    assert math.isinf(s1["psnr_gray8"]) and s1["ssim_gray8"] == pytest.approx(1.0)
    assert s1["qabf"] == pytest.approx(qabf(tree["aif"], [tree["a"], tree["b"], tree["c"]]), abs=1e-6)
    assert "scd" not in s1 and "psnr" not in p1  # SCD only for two sources, reference metrics only with a ground truth
    assert p1["scd"] == pytest.approx(scd(tree["avg"], [tree["a"], tree["b"]]), abs=1e-6)
    assert p1["halo"] == pytest.approx(0.0, abs=1e-9)  # an average of the sources adds no structure


def test_dataset_filter_and_errors(tree):
    df = evaluate_tree(tree["fused"], benchmark_root=tree["bench"], method="m", datasets=["Pairs"], metrics=["sf"])
    assert list(df["dataset"]) == ["Pairs"]
    with pytest.raises(StackMFFError, match=r"not found.*Nope"):
        evaluate_tree(tree["fused"], benchmark_root=tree["bench"], method="m", datasets=["Nope"])
    with pytest.raises(StackMFFError, match="unknown metric"):
        evaluate_tree(tree["fused"], benchmark_root=tree["bench"], method="m", metrics=["psnrr"])
    with pytest.raises(StackMFFError, match="fused results folder not found"):
        evaluate_tree(tree["bench"] / "x", benchmark_root=tree["bench"], method="m")
    empty = tree["fused"].parent / "empty"
    empty.mkdir()
    with pytest.raises(StackMFFError, match="no fused results found"):
        evaluate_tree(empty, benchmark_root=tree["bench"], method="m", metrics=["sf"])


def test_size_mismatch_error_skip_register(tree):
    cropped = tree["aif"][:, 4:, 4:]
    (tree["fused"] / "Synth" / "s1.png").unlink()
    _write(tree["fused"] / "Synth" / "s1.png", cropped)
    kw = dict(benchmark_root=tree["bench"], method="m", datasets=["Synth"], metrics=["psnr", "ssim"])
    with pytest.raises(StackMFFError, match="sizes differ"):
        evaluate_tree(tree["fused"], **kw)
    skipped = evaluate_tree(tree["fused"], on_size_mismatch="skip", **kw)
    assert skipped.empty
    reg = evaluate_tree(tree["fused"], on_size_mismatch="register", **kw).set_index("metric")["value"]
    assert reg["ssim"] > 0.9  # registered back onto the ground truth grid (a 4-pixel shift)


def test_evaluate_images_mixes_gray_and_colour_and_reports_nan(tree, caplog):
    gray_gt = (tree["aif"] * np.array([0.299, 0.587, 0.114])[:, None, None]).sum(0, keepdims=True)
    out = evaluate_images(tree["aif"], reference=gray_gt, metrics=["psnr", "ms_ssim"])
    assert out["psnr"] > 60  # luma of both: equal up to float rounding
    assert math.isnan(out["ms_ssim"]) and "at least 161x161" in caplog.text  # 128 px is too small for MS-SSIM
    assert psnr(tree["aif"], tree["aif"]) == math.inf
    assert set(METRICS) >= set(FAST)


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_write_table_roundtrip_and_refusals(tmp_path, ext):
    df = pd.DataFrame.from_records([("m", "d", "s", "psnr", 31.5), ("m", "d", "s", "qabf", math.nan)], columns=COLUMNS)
    path = write_table(df, tmp_path / "out" / f"table{ext}")
    back = pd.read_csv(path) if ext == ".csv" else pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    with pytest.raises(StackMFFError, match="exists"):
        write_table(df, path)
    write_table(df.iloc[:1], path, overwrite=True)
    assert len(pd.read_csv(path) if ext == ".csv" else pd.read_parquet(path)) == 1
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp files left behind
    with pytest.raises(StackMFFError, match=r"\.csv or \.parquet"):
        write_table(df, tmp_path / "table.xlsx")


def test_cli(tree, tmp_path, capsys):
    out = tmp_path / "t.csv"
    args = ["evaluate", str(tree["fused"]), "--benchmark", str(tree["bench"]), "--method", "m", "-o", str(out)]
    assert main([*args, "--metrics", "sf", "qabf"]) == 0
    df = pd.read_csv(out)
    assert set(df["metric"]) == {"sf", "qabf"} and len(df) == 4
    assert "qabf" in capsys.readouterr().out  # per-dataset summary on stdout
    assert main([*args, "--metrics", "sf"]) == 2  # exists, no --overwrite
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err
    assert main([*args, "--overwrite", "--metrics", "nope"]) == 2
    assert "unknown metric" in capsys.readouterr().err


def test_index_errors_need_both_maps_and_equal_sizes():
    rng = np.random.default_rng(0)
    fused = rng.random((3, 16, 16), dtype=np.float32)
    gt = rng.integers(0, 4, (16, 16))
    pred = gt.copy()
    pred[:4] = 3 - pred[:4]  # a quarter of the pixels wrong
    want = np.sqrt(np.mean(((pred - gt) / 3.0) ** 2))
    got = evaluate_images(fused, index_map=pred, index_gt=gt, metrics=["index_rmse", "index_mae", "sf"])
    assert got["index_rmse"] == pytest.approx(want) and got["index_mae"] == pytest.approx(
        np.mean(np.abs(pred - gt)) / 3
    )
    assert set(evaluate_images(fused, index_map=pred, metrics=["index_rmse", "sf"])) == {"sf"}  # no ground truth
    # all five from one pass of index_map_errors, each the same as the function's own
    names = ["index_rmse", "index_mae", "index_log_rms", "index_abs_rel", "index_sq_rel"]
    errors = index_map_errors(pred, gt, 4)
    assert evaluate_images(fused, index_map=pred, index_gt=gt, metrics=names) == {
        n: pytest.approx(float(errors[n.removeprefix("index_")])) for n in names
    }
    assert not METRICS["index_rmse"].higher_is_better
    with pytest.raises(StackMFFError, match="differ in size"):
        evaluate_images(fused, index_map=pred[:8], index_gt=gt[:8], metrics=["index_rmse"])
