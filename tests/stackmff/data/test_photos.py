"""Photo bank and dead-leaves photo scenes (stackmff.data.photos), JPEG layers, and their use by ProceduralStacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from stackmff.data.augment import jpeg_layers
from stackmff.data.datasets import ProceduralStacks
from stackmff.data.photos import collect_photos, load_photo_bank, make_photo_scene
from stackmff.data.synthesis import SynthStack, synthesize_physical
from stackmff.errors import StackMFFError

ROOT = Path(__file__).resolve().parents[3]


def _write(path: Path, h: int, w: int, value: int | None = None, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = (
        np.full((h, w, 3), value, np.uint8)
        if value is not None
        else np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    )
    assert cv2.imwrite(str(path), img)


@pytest.fixture(scope="module")
def grey_bank() -> tuple[np.ndarray, ...]:
    return (np.full((120, 150, 3), 0.5, np.float32),)


def test_builtin_bank_lists_every_file_with_a_licence(tmp_path):
    man = collect_photos(tmp_path / "bank", max_side=256)
    files = sorted(p.relative_to(tmp_path / "bank").as_posix() for p in (tmp_path / "bank").rglob("*.png"))
    assert files == sorted(it["file"] for it in man["photos"]) and man["count"] == len(files) >= 10
    assert {it["source"] for it in man["photos"]} == {"skimage", "matplotlib"}
    lic = (tmp_path / "bank" / "LICENSES.md").read_text()
    for it in man["photos"]:
        assert it["licence"] and f"| {it['file']} | {it['licence']} |" in lic
        assert max(it["size"]) <= 256
    assert json.loads((tmp_path / "bank" / "manifest.json").read_text()) == man
    assert len(load_photo_bank(tmp_path / "bank")) == man["count"]


def test_folder_source_takes_the_largest_kde_image_and_only_included_entries(tmp_path):
    walls = tmp_path / "wallpapers"
    _write(walls / "Lake" / "contents" / "images" / "120x80.png", 80, 120, seed=1)
    _write(walls / "Lake" / "contents" / "images" / "300x200.jpg", 200, 300, seed=2)
    _write(walls / "Lake" / "contents" / "screenshot.png", 80, 120, seed=3)
    _write(walls / "Vector" / "contents" / "images" / "300x200.png", 200, 300, seed=4)
    man = collect_photos(tmp_path / "bank", [], folders={"deb": (str(walls), "LGPL-3.0", ["Lake"])})
    assert [(it["file"], it["size"], it["licence"]) for it in man["photos"]] == [
        ("deb/Lake_contents_images_300x200.png", [200, 300], "LGPL-3.0")
    ]
    with pytest.raises(StackMFFError, match="exists; pass overwrite"):
        collect_photos(tmp_path / "bank", [], folders={"deb": (str(walls), "x")})
    with pytest.raises(StackMFFError, match="not found"):
        collect_photos(tmp_path / "b2", [], folders={"deb": (str(tmp_path / "nope"), "x")})
    with pytest.raises(StackMFFError, match="unknown photo source"):
        collect_photos(tmp_path / "b3", ["flickr"])
    assert not (tmp_path / "b3").exists() and not list(tmp_path.glob(".b3*"))  # no partial output


def test_photo_scene_is_deterministic_and_keeps_photo_values(grey_bank):
    a = make_photo_scene(3, 64, 80, grey_bank, specular_prob=0.0)
    b = make_photo_scene(3, 64, 80, grey_bank, specular_prob=0.0)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.disparity, b.disparity)
    assert a.image.shape == (3, 64, 80) and a.disparity.shape == (64, 80)
    # every pixel is a (colour-gained) photo pixel: 0.5 * exp(+-0.15), no synthetic overlay or noise
    assert a.image.min() >= 0.5 * np.exp(-0.151) and a.image.max() <= 0.5 * np.exp(0.151)
    assert 0.0 <= a.disparity.min() and a.disparity.max() <= 1.0 and np.ptp(a.disparity) >= 0.4 - 1e-6


def test_photo_scene_without_leaves_is_one_plane(grey_bank):
    s = make_photo_scene(0, 40, 50, grey_bank, n_leaves=(0, 0))
    d = s.disparity.astype(np.float64)
    assert np.abs(np.diff(d, 2, axis=0)).max() < 1e-5 and np.abs(np.diff(d, 2, axis=1)).max() < 1e-5


def test_leaves_occlude_with_exact_depth():
    # two photos of different constant colours: where a leaf is painted the colour changes AND the disparity rises
    bank = (np.full((100, 100, 3), 0.2, np.float32), np.full((100, 100, 3), 0.8, np.float32))
    for seed in range(5):
        s = make_photo_scene(seed, 64, 64, bank, n_leaves=(6, 12), specular_prob=0.0, slant=0.0)
        # without slant every surface is a constant-disparity region: one colour per disparity value
        for v in np.unique(s.disparity):
            sel = s.disparity == v
            assert np.ptp(s.image[0][sel]) < 1e-6


def test_jpeg_layers_quantise_and_keep_the_ground_truth():
    g = np.random.default_rng(0)
    img = cv2.GaussianBlur(g.random((48, 48, 3), dtype=np.float32), (0, 0), 2).transpose(2, 0, 1)
    st = synthesize_physical(np.ascontiguousarray(img), g.random((48, 48), dtype=np.float32), 3, rng=0)
    out = jpeg_layers(st, 1, quality=(90, 95))
    assert out.layers.shape == st.layers.shape and out.layers.dtype == np.float32
    assert np.array_equal(out.index, st.index) and np.array_equal(out.aif, st.aif)
    assert np.allclose(out.layers * 255, np.rint(out.layers * 255), atol=1e-4)  # 8-bit values
    err = float(np.abs(out.layers - st.layers).mean())
    assert 0 < err < 0.02
    low = jpeg_layers(st, 1, quality=(5, 5))
    assert float(np.abs(low.layers - st.layers).mean()) > err  # lower quality, larger error
    with pytest.raises(StackMFFError, match="JPEG quality"):
        jpeg_layers(st, 1, quality=(0, 50))
    assert isinstance(out, SynthStack)


def test_procedural_stacks_mix_photo_scenes_and_keep_old_samples(tmp_path):
    collect_photos(tmp_path / "bank", ["skimage"], max_side=256)
    old = ProceduralStacks(8, size=64, n_range=(2, 32), seed=5)
    none = ProceduralStacks(8, size=64, n_range=(2, 32), seed=5, photos=tmp_path / "bank", photo_prob=0.0)
    mixed = ProceduralStacks(8, size=64, n_range=(2, 32), seed=5, photos=tmp_path / "bank", photo_prob=1.0)
    for i in range(3):
        a, b, c = old.draw(i), none.draw(i), mixed.draw(i)
        assert np.array_equal(a.layers, b.layers)  # the photo option off: exactly the samples of before
        assert c.n == a.n and not np.array_equal(a.aif, c.aif)
        assert np.array_equal(c.layers, mixed.draw(i).layers)  # deterministic
    assert max(old.n_layers(i) for i in range(8)) > 10  # N up to 32 is drawn
    aug = ProceduralStacks(4, size=64, n_range=(4, 4), seed=5, breathing=0.05, jpeg_prob=1.0, invalid_prob=0.0)
    a, b = old.draw(0), aug.draw(0)
    plain = ProceduralStacks(4, size=64, n_range=(4, 4), seed=5, invalid_prob=0.0).draw(0)
    assert np.array_equal(plain.aif, b.aif) and not np.array_equal(plain.layers, b.layers)
    assert np.allclose(b.layers * 255, np.rint(b.layers * 255), atol=1e-4)  # JPEG-decoded 8-bit layers


def test_photos_cli_writes_a_bank_and_refuses_to_overwrite(tmp_path):
    cmd = [sys.executable, "-m", "stackmff", "photos", str(tmp_path / "bank"), "--sources", "matplotlib", "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["count"] == len(list((tmp_path / "bank").rglob("*.png"))) >= 1
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr and "Traceback" not in proc.stderr
