"""Tests of the ``stackmff`` command line: fuse, fuse-dataset, fuse-pairs, methods, and every bad-input case."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from _helpers import synthetic_stack, write_image
from PIL import Image

from stackmff.cli import main
from stackmff.fusion import DEFAULT_METHOD, get_fusion_method, list_methods
from stackmff.io import load_stack

CLASSICAL = [m.name for m in list_methods() if not m.learned]
ROOT = Path(__file__).resolve().parents[1]


def _to8(img_chw: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img_chw, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def _write_stack(folder: Path, n: int = 3, *, height: int = 40, width: int = 48, seed: int = 0) -> Path:
    stack, _, _ = synthetic_stack(n, height=height, width=width, seed=seed)
    for i, layer in enumerate(stack):
        write_image(folder / f"{i}.png", _to8(layer))
    return folder


def _fails_cleanly(capsys, argv: list[str], pattern: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("stackmff: error: ") and "Traceback" not in err
    assert pattern in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def stack_dir(tmp_path):
    return _write_stack(tmp_path / "stack")


@pytest.mark.parametrize("method", CLASSICAL)
def test_fuse_every_classical_method(tmp_path, stack_dir, capsys, method):
    out = tmp_path / "out" / f"{method}.png"
    assert main(["fuse", str(stack_dir), "-o", str(out), "--method", method, "--align", "none"]) == 0
    assert f"wrote {out}" in capsys.readouterr().err
    written = cv2.imread(str(out))[..., ::-1]
    expected = get_fusion_method(method)(load_stack(stack_dir).images).image
    np.testing.assert_array_equal(written, _to8(expected))


def test_json_summary_and_index_map(tmp_path, stack_dir, capsys):
    out, imap = tmp_path / "fused.png", tmp_path / "maps" / "index.png"
    argv = ["fuse", str(stack_dir), "-o", str(out), "-m", "focus_measure", "--align", "none", "--json"]
    assert main([*argv, "--index-map", str(imap)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == "focus_measure" and summary["layers"] == 3
    assert (summary["width"], summary["height"], summary["channels"]) == (48, 40, 3)
    assert len(summary["inputs"]) == 3 and summary["seconds"] > 0
    assert set(summary["outputs"]) == {str(out), str(imap), str(imap.with_name("index_preview.png"))}
    saved = cv2.imread(str(imap), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint16
    expected = get_fusion_method("focus_measure")(load_stack(stack_dir).images).index_map
    np.testing.assert_array_equal(saved, expected)
    preview = cv2.imread(str(imap.with_name("index_preview.png")))
    assert preview.shape == (40, 48, 3)
    assert "device" not in summary and "threads" not in summary  # no network ran


def test_json_summary_says_where_the_network_ran(tmp_path, stack_dir, capsys):
    out = tmp_path / "fused.png"
    argv = ["fuse", str(stack_dir), "-o", str(out), "--align", "none", "--device", "cpu", "--threads", "1", "--json"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == DEFAULT_METHOD and summary["device"] == "cpu" and summary["threads"] == 1
    assert summary["network_seconds"] > 0 and "gpu_peak_mb" not in summary  # GPU memory only on CUDA


def test_methods_lists_names_and_default(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in CLASSICAL:
        assert name in out
    assert f"{DEFAULT_METHOD}  " in out or f"{DEFAULT_METHOD} " in out
    assert "(default)" in next(line for line in out.splitlines() if line.startswith(DEFAULT_METHOD + " "))
    assert main(["methods", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"] for m in listed} >= set(CLASSICAL)
    assert all(m["description"] for m in listed)


def test_methods_says_which_need_weights(capsys, monkeypatch, tmp_path):
    from stackmff.fusion import stackmff_v3

    monkeypatch.setattr(stackmff_v3, "DEFAULT_STAR_WEIGHTS", tmp_path / "absent.pt")
    assert main(["methods", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["stackmff_v3_star"]["needs_weights"] and not listed["stackmff_v3"]["needs_weights"]
    assert not any(listed[n]["needs_weights"] for n in CLASSICAL)
    assert main(["methods"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("stackmff_v3_star "))
    assert "needs --weights" in line


def test_gray_rgb_rgba_mix_fuses(tmp_path, capsys):
    stack, _, _ = synthetic_stack(3, height=32, width=32)
    folder = tmp_path / "mix"
    write_image(folder / "0.png", _to8(stack[0])[..., 1])
    write_image(folder / "1.png", _to8(stack[1]))
    rgba = np.dstack([_to8(stack[2]), np.full((32, 32), 200, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(folder / "2.png")
    out = tmp_path / "fused.png"
    assert main(["fuse", str(folder), "-o", str(out), "--align", "none"]) == 0
    assert cv2.imread(str(out)).shape == (32, 32, 3)
    assert "alpha" in capsys.readouterr().err


def test_16bit_tiff_gives_16bit_output(tmp_path):
    stack, _, _ = synthetic_stack(2, height=32, width=40)
    folder = tmp_path / "tif16"
    folder.mkdir()
    for i, layer in enumerate(stack):
        tifffile.imwrite(folder / f"{i}.tif", np.rint(layer.transpose(1, 2, 0) * 65535).astype(np.uint16))
    out = tmp_path / "fused.png"
    assert main(["fuse", str(folder), "-o", str(out), "-m", "focus_measure", "--align", "none"]) == 0
    saved = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert saved.dtype == np.uint16 and saved.shape == (32, 40, 3)
    # a gather method copies source values bit for bit, also at 16 bits
    src = np.stack([np.rint(layer * 65535).astype(np.uint16) for layer in stack])  # (N, C, H, W)
    assert np.isin(saved[..., ::-1].transpose(2, 0, 1), src).all()


def test_output_in_missing_folder_is_created(tmp_path, stack_dir):
    out = tmp_path / "a" / "b" / "c.jpg"
    assert main(["fuse", str(stack_dir), "-o", str(out), "--align", "none"]) == 0
    assert out.is_file()


def test_existing_output_refused_then_overwritten(tmp_path, stack_dir, capsys):
    out = tmp_path / "fused.png"
    out.write_bytes(b"keep me")
    _fails_cleanly(capsys, ["fuse", str(stack_dir), "-o", str(out), "--align", "none"], "--overwrite")
    assert out.read_bytes() == b"keep me"
    assert main(["fuse", str(stack_dir), "-o", str(out), "--align", "none", "--overwrite"]) == 0
    assert cv2.imread(str(out)).shape == (40, 48, 3)


def test_existing_index_map_refused_before_anything_is_written(tmp_path, stack_dir, capsys):
    out, imap = tmp_path / "fused.png", tmp_path / "index.png"
    imap.write_bytes(b"old map")
    argv = ["fuse", str(stack_dir), "-o", str(out), "-m", "focus_measure", "--align", "none", "--index-map", str(imap)]
    _fails_cleanly(capsys, argv, "--overwrite")
    assert not out.exists() and imap.read_bytes() == b"old map"


def test_bad_inputs_fail_cleanly_without_output(tmp_path, capsys):
    out = tmp_path / "out" / "fused.png"
    base = ["-o", str(out), "--align", "none"]

    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_cleanly(capsys, ["fuse", str(empty), *base], "no images found")

    one = tmp_path / "one"
    write_image(one / "0.png", np.zeros((8, 8, 3), np.uint8))
    _fails_cleanly(capsys, ["fuse", str(one), *base], "at least 2 layers")

    mixed = tmp_path / "mixed"
    write_image(mixed / "0.png", np.zeros((8, 8, 3), np.uint8))
    write_image(mixed / "1.png", np.zeros((8, 9, 3), np.uint8))
    _fails_cleanly(capsys, ["fuse", str(mixed), *base], "different sizes")

    truncated = _write_stack(tmp_path / "truncated")
    data = (truncated / "1.png").read_bytes()
    (truncated / "1.png").write_bytes(data[: len(data) // 3])
    _fails_cleanly(capsys, ["fuse", str(truncated), *base], "1.png")

    fake = _write_stack(tmp_path / "fake")
    (fake / "1.png").write_text("not an image")
    _fails_cleanly(capsys, ["fuse", str(fake), *base], "cannot read")

    good = _write_stack(tmp_path / "good")
    _fails_cleanly(capsys, ["fuse", str(good), *base, "--method", "no_such_method"], "unknown method 'no_such_method'")
    _fails_cleanly(capsys, ["fuse", str(tmp_path / "nowhere"), *base], "input not found")
    _fails_cleanly(capsys, ["fuse", str(good), "-o", str(tmp_path / "x.gif"), "--align", "none"], "unknown extension")

    assert not out.exists() and not out.parent.exists()  # nothing written, not even the folder
    assert not list(tmp_path.glob("*.gif"))


def test_fuse_dataset_and_pairs(tmp_path, capsys):
    root = tmp_path / "bench"
    for scene in ("s1", "s2"):
        _write_stack(root / "Toy" / "dof_stack" / scene, n=2, height=24, width=24)
    outdir = tmp_path / "fused"
    argv = ["fuse-dataset", str(root), "-o", str(outdir), "--align", "none", "--no-progress", "--json"]
    assert main(argv) == 0
    summaries = json.loads(capsys.readouterr().out)
    assert [(s["dataset"], s["scene"]) for s in summaries] == [("Toy", "s1"), ("Toy", "s2")]
    assert (outdir / "Toy" / "s1.png").is_file() and (outdir / "Toy" / "s2.png").is_file()

    pairs = tmp_path / "pairs"
    stack, _, _ = synthetic_stack(2, height=24, width=24)
    for name in ("p1", "p2"):
        write_image(pairs / "Lytro" / "A" / f"{name}.png", _to8(stack[0]))
        write_image(pairs / "Lytro" / "B" / f"{name}.png", _to8(stack[1]))
    assert main(["fuse-pairs", str(pairs), "-o", str(outdir), "--align", "none", "--no-progress"]) == 0
    assert sorted(p.name for p in (outdir / "Lytro").iterdir()) == ["p1.png", "p2.png"]
    capsys.readouterr()
    _fails_cleanly(capsys, ["fuse-pairs", str(pairs), "-o", str(outdir), "--datasets", "MFFW"], "MFFW")


def test_fuse_dataset_index_maps_alignment_frame_and_no_silent_overwrite(tmp_path, capsys):
    root = tmp_path / "bench"
    _write_stack(root / "Toy" / "dof_stack" / "s1", n=3, height=40, width=48)
    outdir = tmp_path / "fused"
    argv = ["fuse-dataset", str(root), "-o", str(outdir), "--no-progress", "--index-maps", "-m", "focus_measure"]
    assert main([*argv, "--align", "similarity", "--align-frame", "fill"]) == 0
    fused = cv2.imread(str(outdir / "Toy" / "s1.png"))
    assert fused.shape[:2] == (40, 48)  # "fill" keeps the reference frame
    index_map = cv2.imread(str(outdir / "Toy" / "index_maps" / "s1.png"), cv2.IMREAD_UNCHANGED)
    assert index_map.dtype == np.uint16 and index_map.shape == (40, 48) and index_map.max() <= 2
    assert (outdir / "Toy" / "index_maps" / "s1_preview.png").is_file()
    before = (outdir / "Toy" / "s1.png").read_bytes()
    capsys.readouterr()
    # a rerun resumes: the finished scene is skipped, not overwritten and not refused
    assert main([*argv, "--align", "none"]) == 0
    assert "skipped 1 finished" in capsys.readouterr().err
    assert (outdir / "Toy" / "s1.png").read_bytes() == before
    assert main([*argv, "--align", "none", "--overwrite"]) == 0
    assert (outdir / "Toy" / "s1.png").read_bytes() != before  # --overwrite redid it (now without alignment)


@pytest.mark.skipif(importlib.util.find_spec("stackmff.align") is None, reason="stackmff.align not written yet")
def test_default_alignment_runs(tmp_path, stack_dir):
    out = tmp_path / "fused.png"
    assert main(["fuse", str(stack_dir), "-o", str(out)]) == 0
    h, w, c = cv2.imread(str(out)).shape
    assert c == 3 and 36 <= h <= 40 and 43 <= w <= 48  # alignment may crop a border that not all layers cover


def test_python_dash_m_reports_errors_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "stackmff", "fuse", str(empty), "-o", str(tmp_path / "f.png"), "--align", "none"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("stackmff: error: no images found")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "f.png").exists()


def test_help_is_grouped_with_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fuse", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for group in ("input/output", "fusion", "alignment", "output"):
        assert f"{group}:" in text
    flat = " ".join(text.split())
    assert f"(default: {DEFAULT_METHOD})" in flat and "(default: auto)" in flat
    assert "(default: None)" not in flat and "(default: False)" not in flat
