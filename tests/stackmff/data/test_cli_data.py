"""The data commands of the CLI: synthesize, extract, depth (error paths)."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np

from stackmff.cli import main


def test_synthesize_command(tmp_path, capsys):
    rc = main(["synthesize", str(tmp_path), "--count", "2", "--size", "32", "--max-layers", "4", "--ext", "png",
               "--no-progress", "--json", "--mode", "physical", "--invalid-prob", "1"])  # fmt: skip
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == {"written": 2, "skipped": 0}
    base = tmp_path / "Procedural" / "TR"
    assert sorted(p.name for p in (base / "focus_index_gt").iterdir()) == ["00000.npy", "00001.npy"]
    assert main(["synthesize", str(tmp_path), "--count", "2", "--size", "32", "--no-progress", "--json",
                 "--max-layers", "4", "--ext", "png", "--mode", "physical", "--invalid-prob", "1"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out) == {"written": 0, "skipped": 2}


def test_synthesize_needs_count(tmp_path, capsys):
    assert main(["synthesize", str(tmp_path)]) == 2
    assert "--count" in capsys.readouterr().err


def test_extract_command(tmp_path, capsys):
    img = cv2.imencode(".jpg", (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8))[1].tobytes()
    with zipfile.ZipFile(tmp_path / "ADEChallengeData2016.zip", "w") as zf:
        zf.writestr("ADEChallengeData2016/images/training/ADE_train_1.jpg", img)
    assert main(["extract", "ADE20K", str(tmp_path / "ADEChallengeData2016.zip"), str(tmp_path / "o"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["written"] == 1
    assert main(["extract", "DUTS", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "saliencydetection.net" in err and err.count("\n") == 1


def test_depth_command_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "im").mkdir()
    cv2.imwrite(str(tmp_path / "im" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert main(["depth", str(tmp_path / "im"), str(tmp_path / "d"), "--checkpoint", str(tmp_path / "ck")]) == 2
    assert "Depth-Anything-V2" in capsys.readouterr().err
