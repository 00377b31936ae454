"""extract / depth / prepare stages as thin callers of the library: absent data, real (tiny) downloads, conventions."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from _helpers import load_dvc_yaml, write_tiny_depth_anything

from pipelines.config import DepthParams, ExtractParams, PrepareParams
from pipelines.stages import depth, extract, prepare
from stackmff.benchmark import is_benchmark_tree
from stackmff.errors import StackMFFError
from stackmff.io import load_image, save_image

ROOT = Path(__file__).resolve().parents[2]


def _png(seed: int, h: int = 24, w: int = 32) -> bytes:
    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _nyu_mat(path: Path, n: int) -> np.ndarray:
    h5py = pytest.importorskip("h5py")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    deps = rng.uniform(0.5, 10.0, (n, 640, 480)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, (n, 3, 640, 480), dtype=np.uint8)  # MATLAB order as h5py sees it
        f["depths"] = deps
    return deps


def test_extract_absent_dataset_says_what_to_download_and_succeeds(tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    out = tmp_path / "extracted" / "ADE20K"
    status = extract.run(ExtractParams(), "ADE20K", tmp_path / "raw" / "ADE20K", out)
    assert status["status"] == "absent" and status["expected"].endswith("raw/ADE20K")
    assert json.loads((out / "extract.json").read_text()) == status
    assert sorted(p.name for p in out.iterdir()) == ["extract.json"]
    msg = caplog.text
    assert str(tmp_path / "raw" / "ADE20K") in msg and "ADEChallengeData2016.zip" in msg
    # depth keeps it absent without needing a checkpoint
    dstat = depth.run(DepthParams(checkpoint=""), "ADE20K", out, tmp_path / "depth" / "ADE20K")
    assert dstat["status"] == "absent"


def test_extract_cli_absent_is_fast_and_exit_zero(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("extract:\n  datasets: [DUTS]\n")
    cmd = [sys.executable, "-m", "pipelines.stages.extract", "--params", str(params), "--dataset", "DUTS"]
    proc = subprocess.run([*cmd, str(tmp_path / "none"), str(tmp_path / "o")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "saliencydetection.net" in proc.stderr and json.loads((tmp_path / "o" / "extract.json").read_text())
    bad = subprocess.run([*cmd[:-1], "COCO", str(tmp_path), str(tmp_path / "o2")], cwd=ROOT, capture_output=True)
    assert bad.returncode == 2 and b"Traceback" not in bad.stderr and b"unknown dataset 'COCO'" in bad.stderr


def test_extract_cityscapes_folder_then_depth_needs_a_checkpoint(tmp_path):
    raw = tmp_path / "raw" / "Cityscapes"
    for k, split in enumerate(("train", "val")):
        d = raw / "leftImg8bit" / split / "aachen"
        d.mkdir(parents=True)
        (d / f"aachen_00000{k}_leftImg8bit.png").write_bytes(_png(k))
    out = tmp_path / "extracted" / "Cityscapes"
    status = extract.run(ExtractParams(), "Cityscapes", raw, out)
    assert status["status"] == "ok" and status["images"] == 2 and status["written"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["extract.json", "images"]  # flattened, no staging left
    with pytest.raises(StackMFFError, match=r"2 images have no depth and depth\.checkpoint is empty"):
        depth.run(DepthParams(checkpoint=""), "Cityscapes", out, tmp_path / "depth")
    with pytest.raises(StackMFFError, match="no Depth Anything V2 checkpoint"):
        depth.run(DepthParams(checkpoint=str(tmp_path / "nope")), "Cityscapes", out, tmp_path / "depth")


def test_extract_nyu_then_depth_inverts_dataset_depth_to_disparity(tmp_path):
    deps = _nyu_mat(tmp_path / "raw" / "nyu_depth_v2_labeled.mat", 4)
    out = tmp_path / "extracted"
    status = extract.run(ExtractParams(seed=1, nyu_test_count=1), "NYU_Depth_V2", tmp_path / "raw", out)
    assert status["images"] == 3 and status["test"] == 1
    assert len(list((out / "test" / "images").iterdir())) == 1 and len(list((out / "test" / "depth").iterdir())) == 1
    # no checkpoint needed: every image has dataset depth
    dstat = depth.run(DepthParams(checkpoint=""), "NYU_Depth_V2", out, tmp_path / "depth")
    assert dstat == {"dataset": "NYU_Depth_V2", "status": "ok", "images": 3, "converted": 3, "estimated": 0}
    name = sorted((tmp_path / "depth" / "depth").iterdir())[0]
    disp, bits = load_image(name)
    assert bits == 16 and disp.shape == (1, 460, 620)
    crop = deps[int(name.stem)].T[10:470, 10:630]
    # larger = nearer: the nearest pixel (smallest metric depth) gets the largest disparity
    near, far = np.unravel_index(crop.argmin(), crop.shape), np.unravel_index(crop.argmax(), crop.shape)
    assert disp[0][near] == pytest.approx(1.0) and disp[0][far] == pytest.approx(0.0)


@pytest.mark.slow  # builds and runs a tiny Depth Anything V2 model (~10 s)
def test_depth_stage_estimates_with_a_local_checkpoint(tmp_path):
    pytest.importorskip("transformers")
    ckpt = write_tiny_depth_anything(tmp_path / "dav2")
    ex = tmp_path / "extracted"
    (ex / "images").mkdir(parents=True)
    for k in range(3):
        (ex / "images" / f"{k}.png").write_bytes(_png(k, 30, 40))
    (ex / "extract.json").write_text('{"status": "ok"}')
    status = depth.run(DepthParams(checkpoint=str(ckpt), batch_size=2), "X", ex, tmp_path / "out")
    assert status["estimated"] == 3 and status["converted"] == 0
    for k in range(3):
        d, bits = load_image(tmp_path / "out" / "depth" / f"{k}.png")
        assert bits == 16 and d.shape == (1, 30, 40) and d.min() == 0.0 and d.max() == 1.0


def test_prepare_copies_a_benchmark_root_as_it_is(tmp_path):
    root = tmp_path / "paper"
    for i in range(2):
        save_image(root / "Mobile_Depth" / "dof_stack" / "keyboard" / f"{i}.png", np.full((3, 8, 8), i / 2, np.float32))
    save_image(root / "Mobile_Depth" / "AiF" / "keyboard.png", np.ones((3, 8, 8), np.float32))
    for ab in "AB":
        save_image(root / "Lytro" / ab / "lytro-01.png", np.zeros((3, 8, 8), np.float32))
    assert is_benchmark_tree(root) and not is_benchmark_tree(ROOT / "data" / "samples")
    names = prepare.run(PrepareParams(max_side=4), root, tmp_path / "out")
    assert names == ["Lytro", "Mobile_Depth"]
    for f in root.rglob("*.png"):
        assert (tmp_path / "out" / f.relative_to(root)).read_bytes() == f.read_bytes()
    with pytest.raises(StackMFFError, match=r"prepare\.sources"):
        prepare.run(PrepareParams(), tmp_path / "missing", tmp_path / "o")


def test_each_extract_stage_depends_on_its_own_raw_folder_which_ships_empty():

    from pipelines.config import load_params

    stage = load_dvc_yaml(ROOT / "dvc.yaml")["stages"]["extract"]
    assert "data/raw/${item.dataset}" in stage["deps"] and "data/raw" not in stage["deps"]
    tracked = subprocess.run(
        ["git", "ls-files", "data/raw"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in load_params(ROOT / "params.yaml", "extract").datasets:
        folder = ROOT / "data" / "raw" / name
        assert f"data/raw/{name}/README.md" in tracked, name  # a fresh clone has the folder DVC depends on
        assert not extract.has_raw_data(folder)  # ... and the README is not mistaken for data
    ignored = subprocess.run(
        ["git", "check-ignore", "data/raw/DUTS/DUTS-TR.zip", "data/raw/DUTS/DUTS-TR/README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["data/raw/DUTS/DUTS-TR.zip", "data/raw/DUTS/DUTS-TR/README.md"]  # downloads stay out of git
