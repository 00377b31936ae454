"""Tests for writing synthetic datasets in the upstream layout (seeded, parallel, resumable)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stackmff.data.datasets import FolderStacks
from stackmff.data.writer import SynthesisConfig, write_stack_dataset
from stackmff.errors import StackMFFError


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_write_procedural_upstream_layout(tmp_path):
    cfg = SynthesisConfig(mode="upstream", n_range=(2, 5), size=(40, 48), ext=".png")
    out = write_stack_dataset(tmp_path, "Toy", count=3, config=cfg, seed=1, progress=False)
    assert out["written"] == 3 and out["skipped"] == 0
    base = tmp_path / "Toy" / "TR"
    for name, n in out["layers"].items():
        files = sorted((base / "focus_stack" / name).iterdir())
        assert len(files) == n and {f.name for f in files} == {f"{i}.png" for i in range(n)}
        gt = np.load(base / "focus_index_gt" / f"{name}.npy")
        assert gt.dtype == np.int64 and gt.shape == (40, 48) and gt.max() < n
        aif = cv2.imread(str(base / "AiF" / f"{name}.png"))
        layers = np.stack([cv2.imread(str(base / "focus_stack" / name / f"{i}.png")) for i in range(n)])
        # lossless layers: the GT-picked pixels are exactly the AiF
        np.testing.assert_array_equal(np.take_along_axis(layers, gt[None, ..., None], 0)[0], aif)
        depth = cv2.imread(str(base / "depth" / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (40, 48)
    # readable by the training dataset
    ds = FolderStacks(tmp_path, size=(32, 32), invalid_prob=0.0)
    assert len(ds) == 3 and ds[0]["layers"].shape[1:] == (3, 32, 32)


def test_parallel_equals_serial_and_resume(tmp_path):
    cfg = SynthesisConfig(mode="physical", n_range=(3, 4), size=(32, 32), invalid_prob=1.0, ext=".png")
    a, b = tmp_path / "a", tmp_path / "b"
    write_stack_dataset(a, "D", count=4, config=cfg, seed=7, workers=1, progress=False)
    write_stack_dataset(b, "D", count=4, config=cfg, seed=7, workers=2, progress=False)
    assert _tree(a) == _tree(b)
    for rel in _tree(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # resume: a scene without its GT file is redone, complete ones are skipped
    gt = a / "D" / "TR" / "focus_index_gt" / "00002.npy"
    before = gt.read_bytes()
    gt.unlink()
    (a / "D" / "TR" / "focus_stack" / "00002" / "0.png").unlink()  # partial layers of an interrupted run
    again = write_stack_dataset(a, "D", count=4, config=cfg, seed=7, progress=False)
    assert again["written"] == 1 and again["skipped"] == 3
    assert gt.read_bytes() == before
    assert _tree(a) == _tree(b)


def test_write_from_extracted_folder(tmp_path):
    src = tmp_path / "ext"
    (src / "images").mkdir(parents=True)
    (src / "depth").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        cv2.imwrite(str(src / "images" / f"im{i}.jpg"), (rng.random((30, 40, 3)) * 255).astype(np.uint8))
        depth = np.tile(np.linspace(0, 65535, 40), (30, 1)).astype(np.uint16)
        cv2.imwrite(str(src / "depth" / f"im{i}.png"), depth)
    cv2.imwrite(str(src / "images" / "nodepth.jpg"), np.zeros((30, 40, 3), np.uint8))
    out = write_stack_dataset(tmp_path / "out", "Ext", source=src, config=SynthesisConfig(layers=[4]), progress=False)
    assert sorted(out["layers"]) == ["im0", "im1"] and set(out["layers"].values()) == {4}
    gt = np.load(tmp_path / "out" / "Ext" / "TR" / "focus_index_gt" / "im0.npy")
    # depth ramps left to right: every row holds all 4 bins, in order along x (layers shuffled: compare sets)
    assert gt.shape == (30, 40) and len(np.unique(gt[0])) == 4
    assert all(len(np.unique(gt[:, x])) == 1 for x in range(40))


def test_writer_errors(tmp_path):
    with pytest.raises(StackMFFError, match="count"):
        write_stack_dataset(tmp_path, "D", config=SynthesisConfig(), progress=False)
    with pytest.raises(StackMFFError, match="images/ and depth/"):
        write_stack_dataset(tmp_path, "D", source=tmp_path, progress=False)
    with pytest.raises(StackMFFError, match="mode"):
        write_stack_dataset(tmp_path, "D", count=1, config=SynthesisConfig(mode="x"), progress=False)
