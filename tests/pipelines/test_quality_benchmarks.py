"""The quality benchmark scripts' own logic: the argmax reference rule, option parsing, the crop panel."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _helpers import synthetic_stack

from metrics import block_sharpness
from pipelines.benchmarks import real_panel, rgbd_gt
from stackmff.color import luma
from stackmff.peers import get_peer


def _two_focus(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img = rng.random((3, 64, 64)).astype(np.float32)
    soft = np.stack([cv2.GaussianBlur(c, (0, 0), 3.0) for c in img])
    a, b = img.copy(), img.copy()
    a[..., 32:], b[..., :32] = soft[..., 32:], soft[..., :32]
    return img, np.stack([a, b])


def test_argmax_picks_the_sharp_layer_away_from_the_seam():
    img, layers = _two_focus(np.random.default_rng(0))
    fused = rgbd_gt.argmax_fuse(layers)
    np.testing.assert_array_equal(fused[..., 4:28], img[..., 4:28])
    np.testing.assert_array_equal(fused[..., 36:60], img[..., 36:60])
    psnr, ssim = rgbd_gt.scores(fused, img)
    assert psnr > rgbd_gt.scores(layers.mean(0), img)[0] + 5 and 0 < ssim <= 1


def test_method_options_parse_like_validate():
    assert rgbd_gt._parse("stackmff_v3") == ("stackmff_v3", {})
    assert rgbd_gt._parse("stackmff_v3:hard") == ("stackmff_v3", {"gather": "hard"})
    assert rgbd_gt._parse("stackmff_v3:gather=soft,half_res=false") == (
        "stackmff_v3",
        {"gather": "soft", "half_res": False},
    )
    assert rgbd_gt.main(["--data", "/nonexistent/folder"]) == 2


def test_crop_panel_and_sharpest_composite(tmp_path):
    img, layers = _two_focus(np.random.default_rng(1))
    src = np.stack([luma(x) for x in layers])
    bs = block_sharpness(img, layers, block=16)
    best = bs.best_layer[0].numpy()
    np.testing.assert_array_equal(best, np.repeat([[0, 0, 1, 1]], 4, axis=0))
    np.testing.assert_array_equal(real_panel.sharpest_image(layers, best, 16), img)
    fused = {real_panel.V3: layers[0], "guided_filter": img}
    maps = {m: block_sharpness(luma(x), src, block=16) for m, x in fused.items()}
    out = tmp_path / "crops" / "s.png"
    real_panel.crop_panel(out, img, fused, maps, 16)
    panel = cv2.imread(str(out))
    # two rows of three tiles (sharpest, V3, guided filter), each 22 px of label over a 4x-enlarged 64 px crop
    assert panel.shape[0] == 2 * (22 + 256) + 6 and panel.shape[1] == 3 * (256 + 4)
    assert real_panel.to_markdown([{"stack": "s", "method": "m", "seconds": 1.0} | bs.summary()]).count("\n") == 3


@pytest.mark.shared
@pytest.mark.slow  # renders all seven RGB-D scenes
def test_rgbd_renders_have_the_documented_layers(shared_data):
    sets = rgbd_gt.render(shared_data, 1000, ["pairs_planes"])
    _name, layers, aif = sets["pairs_planes"][0]
    assert layers.shape[0] == 2 and layers.shape[1:] == aif.shape
    assert np.allclose(layers * 65535, np.round(layers * 65535), atol=2e-3)  # 16-bit levels


@pytest.mark.skipif(not get_peer("focus_stack").available(), reason="focus-stack not installed")
def test_focus_stack_result_stays_in_the_frame_of_the_registered_layers(tmp_path):
    """focus-stack re-aligns and crops by default; the panel keeps its result in the layers' frame (no resize)."""
    layers, _, _ = synthetic_stack(4, height=96, width=128, seed=3)
    img, seconds = real_panel.external("focus_stack", layers)
    assert img.shape == layers.shape[1:] and seconds > 0
    ratio = block_sharpness(img, layers, block=16).summary()["median_ratio"]
    assert ratio > 0.9  # as sharp as the sharpest layer, not a misregistered resize of a crop (read as ~0.5)


def test_reuse_merges_new_rows_into_the_existing_panel():
    old = [
        {"stack": "a", "method": "v3", "median_ratio": 1.0},
        {"stack": "a", "method": "gf", "median_ratio": 0.9},
        {"stack": "b", "method": "v3", "median_ratio": 0.8},
    ]
    new = [{"stack": "a", "method": "gf", "median_ratio": 0.95}, {"stack": "a", "method": "fs", "median_ratio": 1.1}]
    merged = real_panel.merge_rows(old, new)
    assert [(r["stack"], r["method"], r["median_ratio"]) for r in merged] == [
        ("a", "v3", 1.0),
        ("a", "gf", 0.95),  # measured again: replaced where it was
        ("a", "fs", 1.1),  # new: after its stack's rows
        ("b", "v3", 0.8),
    ]
    assert real_panel.merge_rows([], new) == new


def test_rgbd_gt_refuses_an_external_program_that_is_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no openfocus, focus-stack or enfuse here
    assert rgbd_gt.main(["--data", str(tmp_path), "--methods", "openfocus:hard"]) == 2  # before any rendering
    err = capsys.readouterr().err.strip()
    assert err == "error: openfocus:hard not installed (not on PATH); see pipelines/README.md"


@pytest.mark.skipif(not get_peer("focus_stack").available(), reason="focus-stack not installed")
def test_rgbd_gt_feeds_an_external_program_the_layers_in_their_frame():
    layers, aif, _ = synthetic_stack(4, height=96, width=128, seed=3)
    fused = rgbd_gt.fuse("focus_stack", layers, None)
    assert fused.shape == aif.shape  # not re-aligned and cropped
    assert rgbd_gt.scores(fused, aif)[0] > rgbd_gt.scores(layers.mean(0), aif)[0] + 3  # 29.1 vs 25.1 dB


@pytest.mark.parametrize("supersample", [1, 2])
def test_align_quality_breathing_layers_and_truth_share_one_geometry(supersample):
    # The breathing case's all-in-focus truth, brought into a layer's frame, must sit exactly on that layer: its
    # in-focus parts agree best with no extra shift (measured: 0.15-0.2 dB above the +-1/4 px shifts). With
    # supersample = 2 the layers and the truth are warped on a grid twice as fine, then block-averaged (optical
    # breathing); the truth moved by half a fine pixel (1/4 px) there fails this test.
    from types import SimpleNamespace

    from pipelines.benchmarks.align_quality import MARGIN, make_cases, psnr
    from stackmff.data.procedural import make_scene

    sc = make_scene(11, 160 + 2 * MARGIN, 200 + 2 * MARGIN)
    cases = make_cases(sc.image, sc.disparity, 3, seed=5, breathing=0.03, shake=3.0, supersample=supersample)
    layers, truth_of = cases["breathing"]
    assert layers.shape == (3, 3, 160, 200) and cases["clean"][0].shape == layers.shape
    for r in range(3):
        truth = truth_of(SimpleNamespace(crop=(0, 0, 200, 160), skipped=False, reference=r)).transpose(1, 2, 0)

        def agreement(dx, dy, truth=truth, layer=layers[r]):
            m = np.float32([[1, 0, dx], [0, 1, dy]])
            moved = cv2.warpAffine(truth, m, (200, 160), flags=cv2.INTER_LANCZOS4)
            return psnr(layer, moved.transpose(2, 0, 1))

        best = agreement(0, 0)
        assert all(best > agreement(*d) for d in ((0.25, 0), (-0.25, 0), (0, 0.25), (0, -0.25))), r
