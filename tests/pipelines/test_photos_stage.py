"""Stage ``photos`` (photo bank from pip-installed sources, licences listed) and ``synthesize`` with source photos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from _helpers import load_dvc_yaml

from pipelines.config import BaseParams, PhotoFolder, PhotosParams, SplitParams, SynthesizeParams, load_params
from pipelines.stages import photos, synthesize
from stackmff.errors import StackMFFError
from stackmff.io import load_image

ROOT = Path(__file__).resolve().parents[2]


def test_default_params_use_only_pip_installed_sources():
    p = load_params(ROOT / "params.yaml", "photos")
    assert p.sources == ["skimage", "matplotlib"] and p.folders == {}
    dvc = load_dvc_yaml(ROOT / "dvc.yaml")
    stage = dvc["stages"]["photos"]
    assert stage["outs"] == ["data/photos"] and "data/photos" in dvc["stages"]["synthesize"]["do"]["deps"]
    assert "photos" in (ROOT / "data" / ".gitignore").read_text().split()  # never committed


def test_photos_stage_then_synthesize_photo_scenes(tmp_path):
    man = photos.run(PhotosParams(sources=["matplotlib"], max_side=128), tmp_path / "photos")
    assert man["count"] >= 1 and (tmp_path / "photos" / "LICENSES.md").is_file()
    sp = SynthesizeParams(train=SplitParams(source="photos", scenes=2, size=48, layers=[2, 32], datasets={"ph": 0}))
    info = synthesize.run(sp, BaseParams(), "train", tmp_path / "depth", tmp_path / "train", tmp_path / "photos")
    assert info["ph"]["layers"] == [2, 32]
    base = tmp_path / "train" / "ph" / "TR"
    assert len(list((base / "focus_stack" / "0001").glob("*.png"))) == 32
    gt = np.load(base / "focus_index_gt" / "0001.npy")
    assert gt.shape == (48, 48) and gt.max() < 32
    aif, _ = load_image(base / "AiF" / "0000.png")
    assert aif.shape == (3, 48, 48)
    with pytest.raises(StackMFFError, match="--photos"):
        synthesize.run(sp, BaseParams(), "train", tmp_path / "depth", tmp_path / "t2")


def test_photos_stage_missing_folder_is_one_line_exit_2(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("photos:\n  sources: []\n  folders:\n    deb: {path: /nonexistent/wallpapers, licence: x}\n")
    cmd = [sys.executable, "-m", "pipelines.stages.photos", "--params", str(params), str(tmp_path / "o")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "/nonexistent/wallpapers" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


def test_photos_profile_folders_load_strictly():
    prof = yaml.safe_load((ROOT / "pipelines" / "profiles" / "photos.yaml").read_text())["set"]
    folder = PhotoFolder(**prof["photos.folders"]["debian_plasma"])
    assert folder.path == "/usr/share/wallpapers" and folder.include and "LGPL" in folder.licence
    assert prof["synthesize.train"]["source"] == "photos" and max(prof["synthesize.train"]["layers"]) >= 32
    assert json.dumps(prof)  # plain YAML values
