"""Extractor tests: tiny fake downloads in each official layout (folder, zip, tar.gz)."""

from __future__ import annotations

import io
import tarfile
import zipfile

import cv2
import h5py
import numpy as np
import pytest

from stackmff.data.extract import extract_dataset, is_uniform_background
from stackmff.errors import StackMFFError


def _jpg(seed: int, uniform: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    if uniform:
        img[:, :16] = (250, 250, 250)  # 50 % one exact colour (PNG keeps it exact; JPEG would not)
    return cv2.imencode(".png" if uniform else ".jpg", img)[1].tobytes()


def _png(seed: int) -> bytes:
    img = (np.random.default_rng(seed).random((24, 32, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


def _smooth_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = cv2.resize((rng.random((3, 4, 3)) * 255).astype(np.uint8), (32, 24), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".png", img)[1].tobytes()


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_uniform_background_filter():
    img = np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    assert not is_uniform_background(img)
    img[:4] = (10, 20, 30)  # 20 % exactly
    assert is_uniform_background(img)
    img[0, 0] = (10, 20, 31)  # just below 20 %
    assert not is_uniform_background(img)


def test_ade20k_zip(tmp_path):
    src = _zip(
        tmp_path / "ADEChallengeData2016.zip",
        {
            "ADEChallengeData2016/images/training/ADE_train_00000001.jpg": _jpg(1),
            "ADEChallengeData2016/images/validation/ADE_val_00000001.jpg": _jpg(2),
            "ADEChallengeData2016/annotations/training/ADE_train_00000001.png": _png(3),
            "ADEChallengeData2016/objectInfo150.txt": b"x",
        },
    )
    stats = extract_dataset("ADE20K", src, tmp_path / "out")
    assert stats["written"] == 2
    out = tmp_path / "out" / "ADE20K" / "images"
    assert _names(out) == ["ADE_train_00000001.jpg", "ADE_val_00000001.jpg"]
    assert (out / "ADE_train_00000001.jpg").read_bytes() == _jpg(1)
    assert extract_dataset("ADE20K", src, tmp_path / "out")["skipped"] == 2  # resumable


def test_duts_rejects_uniform_background(tmp_path):
    # DUTS ships JPEGs; a PNG-encoded member (named .jpg) keeps the uniform colour exact for the test
    _zip(
        tmp_path / "DUTS-TR.zip",
        {
            "DUTS-TR/DUTS-TR-Image/a.jpg": _jpg(1),
            "DUTS-TR/DUTS-TR-Image/b.jpg": _jpg(2, uniform=True),
            "DUTS-TR/DUTS-TR-Mask/a.png": _png(3),
        },
    )
    _zip(tmp_path / "DUTS-TE.zip", {"DUTS-TE/DUTS-TE-Image/c.jpg": _jpg(4)})
    stats = extract_dataset("DUTS", tmp_path, tmp_path / "out")  # a folder holding both archives
    assert stats == {"written": 2, "skipped": 0, "rejected": 1}
    assert _names(tmp_path / "out" / "DUTS" / "images") == ["a.jpg", "c.jpg"]


def test_diode_tar_keeps_images_with_depth(tmp_path):
    base = "train/indoors/scene_00019/scan_00183"
    src = _tar(
        tmp_path / "train.tar.gz",
        {
            f"{base}/00019_00183_indoors_000_010.png": _smooth_png(1),  # RGB before its depth in the stream
            f"{base}/00019_00183_indoors_000_010_depth.npy": b"npy",
            f"{base}/00019_00183_indoors_000_010_depth_mask.npy": b"npy",
            f"{base}/00019_00183_indoors_000_020_depth.npy": b"npy",  # depth before RGB
            f"{base}/00019_00183_indoors_000_020.png": _png(2),
            f"{base}/00019_00183_indoors_000_030.png": _png(3),  # no depth: skipped
        },
    )
    stats = extract_dataset("DIODE", src, tmp_path / "out")
    assert stats["written"] == 2 and stats["rejected"] == 1
    out = tmp_path / "out" / "DIODE" / "images"
    assert _names(out) == ["00019_00183_indoors_000_010.jpg", "00019_00183_indoors_000_020.jpg"]
    img = cv2.imread(str(out / "00019_00183_indoors_000_010.jpg"))
    ref = cv2.imdecode(np.frombuffer(_smooth_png(1), np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == ref.shape and np.abs(img.astype(int) - ref).mean() < 3  # JPEG re-encode


def test_cityscapes_folder(tmp_path):
    root = tmp_path / "cs"
    for split, city, k in (("train", "aachen", 1), ("val", "frankfurt", 2), ("test", "berlin", 3)):
        d = root / "leftImg8bit" / split / city
        d.mkdir(parents=True)
        (d / f"{city}_000000_00001{k}_leftImg8bit.png").write_bytes(_png(k))
    (root / "gtFine" / "train" / "aachen").mkdir(parents=True)
    (root / "gtFine" / "train" / "aachen" / "x_gtFine_color.png").write_bytes(_png(9))
    stats = extract_dataset("Cityscapes", root, tmp_path / "out")
    assert stats["written"] == 3
    assert len(_names(tmp_path / "out" / "Cityscapes" / "images")) == 3


def test_nyu_labeled_mat(tmp_path):
    n = 10
    rng = np.random.default_rng(0)
    mat = tmp_path / "nyu_depth_v2_labeled.mat"
    imgs = rng.integers(0, 256, (n, 3, 640, 480), dtype=np.uint8)  # MATLAB order as h5py sees it
    deps = rng.uniform(0.5, 10.0, (n, 640, 480)).astype(np.float32)
    with h5py.File(mat, "w") as f:
        f["images"] = imgs
        f["depths"] = deps
    stats = extract_dataset("NYU_Depth_V2", mat, tmp_path / "out", seed=3, nyu_test_count=4)
    assert stats["written"] == n and stats["test"] == 4
    train = _names(tmp_path / "out" / "NYU_Depth_V2" / "images")
    test = _names(tmp_path / "out" / "NYU_Depth_V2_test" / "images")
    assert len(train) == 6 and len(test) == 4 and not set(train) & set(test)
    name = train[0]
    i = int(name.split(".")[0])
    d = cv2.imread(
        str(tmp_path / "out" / "NYU_Depth_V2" / "depth" / name.replace(".jpg", ".png")), cv2.IMREAD_UNCHANGED
    )
    assert d.shape == (460, 620) and d.dtype == np.uint8 and d.min() == 0 and d.max() == 255
    crop = deps[i].T[10:470, 10:630].astype(np.float64)
    ref = np.rint((crop - crop.min()) / (crop.max() - crop.min()) * 255)
    np.testing.assert_array_equal(d, ref)
    img = cv2.imread(str(tmp_path / "out" / "NYU_Depth_V2" / "images" / name))[..., ::-1]
    assert img.shape == (460, 620, 3)
    # same seed -> same split; resumable
    again = extract_dataset("NYU_Depth_V2", tmp_path, tmp_path / "out", seed=3, nyu_test_count=4)
    assert again["skipped"] == n


def test_missing_raw_data_names_download(tmp_path):
    with pytest.raises(StackMFFError, match=r"ADEChallengeData2016\.zip"):
        extract_dataset("ADE20K", tmp_path / "nope.zip", tmp_path / "out")
    with pytest.raises(StackMFFError, match="dataset must be one of"):
        extract_dataset("COCO", tmp_path, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StackMFFError, match="no Cityscapes images"):
        extract_dataset("Cityscapes", tmp_path / "empty", tmp_path / "out")
