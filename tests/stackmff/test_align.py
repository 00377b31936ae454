"""Tests of stackmff.align: recovered transforms on synthetic breathing/shaken stacks, fusion after alignment,
the registered-stack shortcut, transforms files, failure detection, bad input, the CLI, and real stacks."""

from __future__ import annotations

import json
import logging
import math
import time

import cv2
import numpy as np
import pytest
from _helpers import psnr, synthetic_stack, write_image

from stackmff.align import align_stack, load_transforms, save_transforms
from stackmff.cli import main
from stackmff.errors import StackMFFError
from stackmff.fusion import get_fusion_method

MARGIN = 24


def similarity(scale: float, rot_deg: float, tx: float, ty: float, centre: tuple[float, float]) -> np.ndarray:
    """3x3 similarity about ``centre``: scale and rotate, then shift by (tx, ty)."""
    a = math.radians(rot_deg)
    cx, cy = centre
    r = np.array(
        [[scale * math.cos(a), -scale * math.sin(a), 0], [scale * math.sin(a), scale * math.cos(a), 0], [0, 0, 1]]
    )
    return (
        np.array([[1, 0, cx + tx], [0, 1, cy + ty], [0, 0, 1.0]])
        @ r
        @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1.0]])
    )


def breathing_stack(n=5, *, height=144, width=192, scale_step=0.012, rot_step=0.4, shift=3.0, seed=0, aniso_step=0.0):
    """A focal stack whose layer k is warped by a known similarity M_k (reference = middle layer: identity); with
    ``aniso_step`` an affine: x stretched and y shrunk by that much more per layer (about the centre).

    Layers are synthesised on a canvas larger than the frame, warped, then cropped, so warped layers have real
    content at their borders (as a camera would see).

    Returns:
        ``(warped (N, C, H, W), clean (N, C, H, W), matrices (N, 3, 3), aif (C, H, W))``; ``matrices[k]`` maps
        reference pixel coordinates to layer-k pixel coordinates: ``warped[k](M_k x) = clean[k](x)``.
    """
    big, aif, _ = synthetic_stack(n, height=height + 2 * MARGIN, width=width + 2 * MARGIN, seed=seed)
    rng = np.random.default_rng(seed + 7)
    ref = n // 2
    to_canvas = np.array([[1, 0, MARGIN], [0, 1, MARGIN], [0, 0, 1.0]])
    crop = np.s_[:, MARGIN : MARGIN + height, MARGIN : MARGIN + width]
    warped, clean, mats = [], [], []
    for k in range(n):
        if k == ref:
            m = np.eye(3)
        else:
            tx, ty = rng.uniform(-shift, shift, 2)
            m = similarity(
                1 + scale_step * (k - ref), rot_step * (k - ref), tx, ty, ((width - 1) / 2, (height - 1) / 2)
            )
            e = aniso_step * (k - ref)
            cen = np.array([[1, 0, (width - 1) / 2], [0, 1, (height - 1) / 2], [0, 0, 1.0]])
            m = m @ cen @ np.diag([1 + e, 1 - e, 1.0]) @ np.linalg.inv(cen)
        mc = to_canvas @ m @ np.linalg.inv(to_canvas)
        layer = big[k].transpose(1, 2, 0)
        w = cv2.warpAffine(layer, mc[:2], layer.shape[1::-1], flags=cv2.INTER_LANCZOS4, borderMode=cv2.BORDER_REFLECT)
        warped.append(np.clip(w, 0, 1).transpose(2, 0, 1)[crop])
        clean.append(big[k][crop])
        mats.append(m)
    return np.stack(warped).astype(np.float32), np.stack(clean), np.stack(mats), aif[crop]


def corner_errors(found: np.ndarray, true: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Per layer, the largest corner displacement (px) between two sets of (N, 3, 3) matrices."""
    h, w = size
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T
    a, b = found @ c, true @ c
    return np.abs(a[:, :2] / a[:, 2:] - b[:, :2] / b[:, 2:]).max(axis=(1, 2))


# -- recovered transforms ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "kw"),
    [
        ("similarity", {}),
        ("similarity", {"scale_step": 0.02, "rot_step": 1.0, "shift": 5.0, "seed": 3}),
        ("affine", {"seed": 4}),
        ("homography", {"seed": 5}),
    ],
)
def test_recovers_known_similarities(mode, kw):
    warped, _, mats, _ = breathing_stack(**kw)
    res = align_stack(warped, mode=mode)
    assert res.mode == mode and not res.skipped and res.failed == []
    assert res.reference == 2 and np.allclose(res.matrices[2], np.eye(3))
    err = corner_errors(res.matrices, mats, warped.shape[2:])
    tol = 0.5 if mode == "similarity" else 1.0  # more parameters, less precise corners on a small image
    assert err.max() < tol, f"corner errors {err.round(3)} px"
    summary = res.summary()
    json.dumps(summary)  # JSON-able
    if mode != "homography":  # a homography's 2x2 block is not its scale
        scales = [layer["scale"] for layer in summary["layers"]]
        true_scales = [math.sqrt(np.linalg.det(m[:2, :2])) for m in mats]
        np.testing.assert_allclose(scales, true_scales, atol=2e-3)


def test_translation_mode_recovers_shifts_and_ignores_scale():
    warped, _, mats, _ = breathing_stack(scale_step=0.0, rot_step=0.0, shift=6.0, seed=1)
    res = align_stack(warped, mode="translation")
    np.testing.assert_allclose(res.matrices[:, :2, :2], np.tile(np.eye(2), (5, 1, 1)))
    assert corner_errors(res.matrices, mats, warped.shape[2:]).max() < 0.3


def test_reference_option_and_chaining_over_many_layers():
    warped, _, mats, _ = breathing_stack(8, scale_step=0.008, seed=2)
    res = align_stack(warped, mode="similarity", reference=4)
    assert corner_errors(res.matrices, mats, warped.shape[2:]).max() < 0.6
    res0 = align_stack(warped, mode="similarity", reference=0)
    # against layer 0: M'_k = M_k M_0^-1
    rel = mats @ np.linalg.inv(mats[0])
    assert corner_errors(res0.matrices, rel, warped.shape[2:]).max() < 0.8


# -- fusion after alignment -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["focus_measure", "laplacian_pyramid"])
def test_fusion_after_alignment_within_2db_of_unperturbed(method):
    warped, clean, _, aif = breathing_stack(seed=6)
    fm = get_fusion_method(method)
    res = align_stack(warped, mode="similarity")
    x0, y0, w, h = res.crop
    assert w >= 160 and h >= 115  # crop keeps most of the 192x144 frame at 1-2 % breathing
    region = np.s_[:, y0 + 4 : y0 + h - 4, x0 + 4 : x0 + w - 4]  # the frame border of the crop is cubic-filled
    inner = np.s_[:, 4:-4, 4:-4]
    p_clean = psnr(fm(clean).image[region], aif[region])
    p_aligned = psnr(fm(res.images).image[inner], aif[region])
    p_raw = psnr(fm(warped).image[region], aif[region])
    assert p_aligned >= p_clean - 2.0, (p_aligned, p_clean)
    assert p_aligned > p_raw + 3.0, (p_aligned, p_raw)  # without alignment the ghosts cost much more


def test_fill_frame_keeps_reference_frame():
    warped, _, _, _ = breathing_stack(seed=6)
    res = align_stack(warped, mode="similarity", frame="fill")
    assert res.images.shape == warped.shape and res.crop == (0, 0, 192, 144)
    # the reference layer is unchanged (gain 1, identity warp)
    np.testing.assert_array_equal(res.images[2], warped[2])
    crop = align_stack(warped, mode="similarity", frame="crop")
    assert crop.images.shape[2] < 144 and crop.images.shape[3] < 192


def test_coverage_matches_per_pixel_mapping():
    from stackmff.align.warp import _coverage

    rng = np.random.default_rng(0)
    h, w = 37, 53
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    for _ in range(30):
        m = similarity(1 + rng.uniform(-0.05, 0.05), rng.uniform(-5, 5), *rng.uniform(-6, 6, 2), (26.0, 18.0))
        m[2, :2] = rng.uniform(-1e-3, 1e-3, 2)  # a little perspective
        p = m @ np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)])
        px, py = p[0] / p[2], p[1] / p[2]
        brute = ((px >= -1e-6) & (px <= w - 1 + 1e-6) & (py >= -1e-6) & (py <= h - 1 + 1e-6)).reshape(h, w)
        np.testing.assert_array_equal(_coverage(m, (h, w)), brute)


# -- registered stacks, brightness ------------------------------------------------------------------------------


def test_registered_stack_returned_unchanged_and_quickly():
    stack, _, _ = synthetic_stack(6, height=240, width=320, seed=8)
    align_stack(stack[:2], mode="auto")  # warm-up (OpenCV initialisation)
    t0 = time.perf_counter()
    res = align_stack(stack, mode="auto")
    seconds = time.perf_counter() - t0
    assert res.skipped and res.images is stack
    assert res.summary()["skipped"] is True
    full = align_stack(stack, mode="similarity")
    assert not full.skipped
    assert seconds < 1.0
    assert corner_errors(full.matrices, np.tile(np.eye(3), (6, 1, 1)), (240, 320)).max() < 0.3


def test_auto_aligns_breathing_stack():
    warped, _, mats, _ = breathing_stack(seed=9)
    res = align_stack(warped, mode="auto")
    assert not res.skipped and res.mode == "similarity"
    assert corner_errors(res.matrices, mats, warped.shape[2:]).max() < 0.5


def test_auto_picks_affine_only_for_a_clear_anisotropic_part():
    # the same breathing + shake stack with an anisotropic part moving the far corners by ~1.5 px: auto measures it at
    # working resolution and picks affine (the 320 px check copy alone read as much on similarity stacks); without it
    # the stack stays similarity (test above); recovered corners as with --align affine
    warped, _, mats, _ = breathing_stack(height=288, width=384, seed=9, aniso_step=0.003)
    res = align_stack(warped, mode="auto")
    assert not res.skipped and res.mode == "affine"
    assert corner_errors(res.matrices, mats, warped.shape[2:]).max() < 0.5
    plain = align_stack(breathing_stack(height=288, width=384, seed=9)[0], mode="auto")
    assert plain.mode == "similarity"


def test_mode_none_is_identity():
    warped, _, _, _ = breathing_stack(seed=1)
    res = align_stack(warped, mode="none")
    assert res.skipped and res.images is warped


def test_brightness_matched_to_reference():
    stack, _, _ = synthetic_stack(3, height=96, width=128, seed=10)
    stack = stack * np.float32(0.8)  # keep away from clipping
    stack[0] = stack[0] * np.float32(1.15)
    stack[2] = stack[2] * np.float32([0.9, 0.85, 0.95])[:, None, None]  # white balance drift too
    res = align_stack(stack, mode="translation")
    np.testing.assert_allclose(res.gains[0], 1 / 1.15, rtol=0.01)
    np.testing.assert_allclose(res.gains[2], 1 / np.array([0.9, 0.85, 0.95]), rtol=0.01)
    np.testing.assert_array_equal(res.offsets, np.zeros((3, 3)))
    for k in (0, 2):
        np.testing.assert_allclose(res.images[k].mean((1, 2)), res.images[1].mean((1, 2)), atol=0.005)
    off = align_stack(stack, mode="translation", match_brightness=False)
    np.testing.assert_array_equal(off.gains, np.ones((3, 3)))


def test_brightness_not_fooled_by_defocus():
    # same exposure everywhere, very different blur: gains must stay at 1 (a regression slope would not)
    warped, _, _, _ = breathing_stack(seed=6)
    res = align_stack(warped, mode="similarity")
    np.testing.assert_allclose(res.gains, 1.0, atol=0.01)


# -- failures ---------------------------------------------------------------------------------------------------


def test_failed_layer_warned_and_dropped(caplog):
    warped, _, _, _ = breathing_stack(seed=11)
    rng = np.random.default_rng(0)
    warped[4] = rng.random(warped[4].shape, dtype=np.float32)  # a layer that fits nothing
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        res = align_stack(warped, mode="similarity")
    assert res.failed == [4]
    assert any("layer 4" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)
    # random noise is distrusted before estimation and follows the valid layer it was linked to
    assert res.invalid == {4: "much noisier"} and res.summary()["distrusted"] == {"4": "much noisier"}
    assert res.images.shape[0] == 5 and np.allclose(res.matrices[4], res.matrices[res.parents[4]])
    dropped = align_stack(warped, mode="similarity", drop_failed=True)
    assert dropped.images.shape[0] == 4 and dropped.kept == [0, 1, 2, 3] and dropped.dropped == [4]
    assert dropped.summary()["dropped"] == [4]


# -- ORB features + RANSAC (second initialisation; metrics.evaluate's registration) ---------------------------------


def _textured_u8(seed: int = 0, shape: tuple[int, int] = (240, 320)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (cv2.GaussianBlur(rng.random(shape), (0, 0), 2) * 2000 % 255).astype(np.uint8)


@pytest.mark.parametrize("model", ["similarity", "affine", "homography"])
def test_orb_transform_recovers_a_known_transform(model):
    from stackmff.align import orb_transform

    src = _textured_u8()
    truth = similarity(1.02, 2.0, 4.0, -3.0, (159.5, 119.5))
    dst = cv2.warpPerspective(src, truth, (320, 240), flags=cv2.INTER_LINEAR)  # dst(truth @ x) = src(x)
    m = orb_transform(src, dst, model=model)
    assert m is not None and m.shape == (3, 3)
    corners = np.array([[20, 20, 1], [300, 20, 1], [20, 220, 1], [300, 220, 1.0]]).T
    got, want = m @ corners, truth @ corners
    np.testing.assert_allclose(got[:2] / got[2], want[:2] / want[2], atol=1.0)


def test_orb_transform_too_little_gives_none_and_bad_model_raises():
    from stackmff.align import orb_transform

    flat = np.full((120, 160), 128, np.uint8)
    assert orb_transform(flat, flat) is None  # no keypoints
    src = _textured_u8(1)
    assert orb_transform(src, src, min_matches=100_000) is None
    assert orb_transform(src, src, best_share=0.5, min_matches=100_000) is None
    with pytest.raises(StackMFFError, match="feature model"):
        orb_transform(src, src, model="translation")


# -- transforms files -------------------------------------------------------------------------------------------


def test_transforms_file_round_trip(tmp_path):
    warped, _, _, _ = breathing_stack(seed=12)
    path = tmp_path / "t.json"
    res = align_stack(warped, mode="similarity", save_transforms=path)
    data = load_transforms(path)
    assert data["n_layers"] == 5 and data["mode"] == "similarity" and data["reference"] == 2
    again = align_stack(warped, transforms=path)
    np.testing.assert_allclose(again.matrices, res.matrices, atol=1e-12)
    np.testing.assert_allclose(again.images, res.images, atol=1e-6)
    # the same sequence at half resolution: matrices are rescaled
    half = np.stack(
        [cv2.resize(x.transpose(1, 2, 0), (96, 72), interpolation=cv2.INTER_AREA).transpose(2, 0, 1) for x in warped]
    )
    small = align_stack(half, transforms=str(path))
    scales = [layer["scale"] for layer in small.summary()["layers"]]
    np.testing.assert_allclose(scales, [layer["scale"] for layer in res.summary()["layers"]], atol=1e-9)
    assert abs(small.summary()["max_shift_px"] - res.summary()["max_shift_px"] / 2) < 0.6
    # save_transforms also works on a result object
    save_transforms(tmp_path / "u.json", res)
    assert json.loads((tmp_path / "u.json").read_text())["layers"][0]["matrix"] == data["layers"][0]["matrix"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{not json", "not valid JSON"),
        ('{"format": "other"}', "malformed"),
        ("[]", "malformed"),
    ],
)
def test_corrupt_transforms_file(tmp_path, content, match):
    path = tmp_path / "t.json"
    path.write_text(content)
    stack, _, _ = synthetic_stack(3, seed=1)
    with pytest.raises(StackMFFError, match=match) as info:
        align_stack(stack, transforms=path)
    assert "\n" not in str(info.value) and "--save-transforms" in str(info.value)


def test_transforms_for_other_layer_count_or_bad_matrix(tmp_path):
    warped, _, _, _ = breathing_stack(seed=12)
    path = tmp_path / "t.json"
    align_stack(warped, mode="translation", save_transforms=path)
    with pytest.raises(StackMFFError, match="for 5 layers but the stack has 4"):
        align_stack(warped[:4], transforms=path)
    data = json.loads(path.read_text())
    data["layers"][1]["matrix"] = [[1, 0], [0, 1]]
    with pytest.raises(StackMFFError, match="layer 1 matrix"):
        align_stack(warped, transforms=data)
    with pytest.raises(StackMFFError, match="does not exist"):
        align_stack(warped, transforms=tmp_path / "missing.json")


def test_bad_options():
    stack, _, _ = synthetic_stack(3, seed=1)
    with pytest.raises(StackMFFError, match="align mode must be one of"):
        align_stack(stack, mode="rigid")
    with pytest.raises(StackMFFError, match="align frame"):
        align_stack(stack, mode="similarity", frame="pad")
    with pytest.raises(StackMFFError, match="reference must be a layer index"):
        align_stack(stack, mode="similarity", reference=3)
    with pytest.raises(StackMFFError, match="at least 2 layers"):
        align_stack(stack[:1], mode="similarity")


# -- CLI --------------------------------------------------------------------------------------------------------


def _write_stack(folder, stack):
    for k, layer in enumerate(stack):
        write_image(folder / f"{k:02d}.png", (layer.transpose(1, 2, 0) * 255 + 0.5).astype(np.uint8))
    return folder


def test_cli_align_and_fuse_with_transforms(tmp_path, capsys):
    warped, _, _, _ = breathing_stack(seed=13)
    src = _write_stack(tmp_path / "in", warped)
    out = tmp_path / "aligned"
    assert main(["align", str(src), "-o", str(out), "--mode", "similarity"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00.png", "01.png", "02.png", "03.png", "04.png", "transforms.json"]
    assert load_transforms(out / "transforms.json")["mode"] == "similarity"
    # refuses to overwrite
    assert main(["align", str(src), "-o", str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    # fuse reusing the transforms; and saving them from a fuse run
    fused = tmp_path / "f.png"
    assert main(["fuse", str(src), "-o", str(fused), "--transforms", str(out / "transforms.json"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["align"]["mode"] == "similarity" and summary["align"]["skipped"] is False
    saved = tmp_path / "s.json"
    args = ["fuse", str(src), "-o", str(tmp_path / "g.png"), "--align", "similarity", "--save-transforms", str(saved)]
    assert main([*args, "--align-frame", "fill"]) == 0
    assert load_transforms(saved)["n_layers"] == 5
    assert cv2.imread(str(tmp_path / "g.png")).shape[:2] == (144, 192)


def test_cli_bad_transforms_file_is_one_line_error(tmp_path, capsys):
    stack, _, _ = synthetic_stack(3, seed=1)
    src = _write_stack(tmp_path / "in", stack)
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    assert main(["fuse", str(src), "-o", str(tmp_path / "f.png"), "--transforms", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("stackmff: error: transforms file") and "\n" not in err


# -- real stacks ------------------------------------------------------------------------------------------------


@pytest.mark.shared
def test_real_phone_stack_breathing(shared_data):
    """Mobile Depth 'keyboard' (phone focal sweep): smooth monotonic breathing of several per cent, all links fit."""
    from stackmff.io import load_stack

    files = sorted((shared_data / "mobile_depth_suwajanakorn" / "keyboard").glob("*.jpg"))[::4]
    stack = load_stack(files).images
    res = align_stack(stack, mode="auto")
    assert not res.skipped and res.failed == []
    scales = np.array([layer["scale"] for layer in res.summary()["layers"]])
    assert np.all(np.diff(scales) > 0)  # magnification grows along the sweep
    assert scales[-1] / scales[0] > 1.03
    assert min(res.scores) > 0.95


# -- issue 12: registered = untouched, invalid frames, file order, breathing with known transforms ------------------


def _gt_cases(seed=7, size=(256, 320), n=7):
    """Procedural RGB-D scene -> thin-lens focal stack cases with GT (see pipelines/benchmarks/align_quality.py)."""
    from pipelines.benchmarks.align_quality import MARGIN as M
    from pipelines.benchmarks.align_quality import make_cases
    from stackmff.data.procedural import make_scene

    sc = make_scene(seed, size[0] + 2 * M, size[1] + 2 * M)
    return make_cases(sc.image, sc.disparity, n, seed=3, breathing=0.03, shake=3.0)


def test_registered_noisy_stack_with_invalid_layers_passes_untouched(caplog):
    cases = _gt_cases()
    for name in ("clean", "shuffled", "invalid"):
        layers = cases[name][0]
        with caplog.at_level(logging.WARNING, logger="stackmff"):
            res = align_stack(layers)
        assert res.skipped and res.images is layers, name
        # the check measured displacements within a few of their own standard errors, all far below a pixel
        assert np.nanmax(res.shifts) < 0.3 and np.nanmax(res.noise) < 0.15
    bad = [k for k, kind in enumerate(cases["invalid_kinds"]) if kind != "valid"]
    assert sorted(res.invalid) == bad  # the invalid layers were found (and reported) even though nothing moved
    assert any("distrusted layer(s)" in r.getMessage() for r in caplog.records)


def test_breathing_and_shake_recovered_from_content_chosen_reference():
    layers, gt = _gt_cases()["breathing"]
    res = align_stack(layers)
    assert not res.skipped and res.mode == "similarity" and res.failed == [] and res.invalid == {}
    assert res.reference in (2, 3, 4)  # the middle of the focus range, chosen from content
    true = gt.matrices @ np.linalg.inv(gt.matrices[res.reference])
    err = corner_errors(res.matrices, true, layers.shape[2:])
    # measured 0.06-0.19 px on this 320x256 stack (the goal of 0.1 px is reached for 3 of 6 layers only; the next
    # test shows why: the registered stack itself moves that much between focus planes)
    assert err.max() < 0.3, err.round(3)
    assert np.median(err[np.arange(7) != res.reference]) < 0.15, err.round(3)
    assert np.nanmax(res.residuals) < 0.5  # the per-layer after-the-fact check: sub-pixel


def test_breathing_error_is_the_registered_stacks_own_defocus_motion_not_drift_along_the_tree():
    # What is left of the corner error above is not accumulated along the chain of links: the same estimator run
    # DIRECTLY on the registered (GT: identity) stack, between the reference and each layer, measures the same apparent
    # motion (defocus differences and occlusion move intensity edges by 0.05-0.4 px between far-apart focus planes;
    # ECC started from the TRUE transform converges there too). Measured: the two agree within 0.05 px per layer.
    cases = _gt_cases()
    layers, gt = cases["breathing"]
    clean = cases["clean"][0]
    res = align_stack(layers)
    r = res.reference
    h, w = layers.shape[2:]
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1.0]]).T

    def moved(m):
        q = m @ corners
        return q[:2] / q[2] - corners[:2]

    diffs, errs = [], []
    for k in range(len(layers)):
        if k == r:
            continue
        true = gt.matrices[k] @ np.linalg.inv(gt.matrices[r])
        err = moved(np.linalg.inv(true) @ res.matrices[k])  # the estimate's error, in the reference frame
        direct = align_stack(clean[[r, k]], mode="similarity", reference=0, match_brightness=False)
        diffs.append(np.abs(err - moved(direct.matrices[1])).max())
        errs.append(np.abs(err).max())
    assert max(diffs) < 0.08, np.round(diffs, 3)
    assert max(errs) > 2 * max(diffs)  # the agreement is not trivial: the errors themselves are larger


def test_file_order_does_not_matter():
    layers, _ = _gt_cases()["breathing"]
    perm = np.random.default_rng(1).permutation(len(layers))
    a, b = align_stack(layers), align_stack(layers[perm])
    assert perm[b.reference] == a.reference and a.crop == b.crop
    np.testing.assert_allclose(b.matrices, a.matrices[perm], atol=1e-9)
    np.testing.assert_allclose(b.images, a.images[perm], atol=1e-6)
    fm = get_fusion_method("stackmff_v3")
    assert abs(psnr(fm(a.images).image, fm(b.images).image)) > 60  # same fused image (within 0.01 dB of anything)


def test_invalid_layers_never_reference_brightness_or_crop():
    from stackmff.data.augment import inject_invalid_layers
    from stackmff.data.synthesis import SynthStack

    layers = _gt_cases()["breathing"][0]
    clean = align_stack(layers)

    st = SynthStack(layers=layers, index=np.zeros(layers.shape[2:], np.int64), aif=layers[0], focus=np.arange(7.0))
    bad = inject_invalid_layers(st, 5, kinds=("exposure", "noisy", "blurred", "blank"), count=4)
    valid = [k for k, kind in enumerate(bad.kinds) if kind == "valid"]
    res = align_stack(bad.layers)
    assert sorted(res.invalid) == [k for k in range(len(bad.kinds)) if k not in valid]
    assert res.reference in valid and valid[clean.reference] == res.reference
    # the valid layers' transforms, crop and brightness are those of the clean stack
    np.testing.assert_allclose(res.matrices[valid], clean.matrices, atol=1e-6)
    assert res.crop == clean.crop
    np.testing.assert_allclose(res.gains[valid], clean.gains, atol=1e-6)
    assert np.all(res.gains[list(res.invalid)] == 1)


def test_brightness_goes_to_the_consensus_not_one_frame():
    stack, _, _ = synthetic_stack(5, height=96, width=128, seed=10)
    stack = stack * np.float32(0.8)
    stack[2] = stack[2] * np.float32(1.08)  # the middle layer drifts (1.2x would be distrusted: left alone)
    res = align_stack(stack, mode="translation")
    assert res.invalid == {}
    np.testing.assert_allclose(res.gains[2], 1 / 1.08, rtol=0.01)
    np.testing.assert_allclose(np.delete(res.gains, 2, 0), 1.0, atol=0.02)


@pytest.mark.slow
def test_default_fuse_on_registered_stack_is_bit_identical_to_align_none(tmp_path, capsys):
    layers = _gt_cases(size=(160, 192), n=5)["invalid"][0]
    src = _write_stack(tmp_path / "in", layers)
    assert main(["fuse", str(src), "-o", str(tmp_path / "a.png"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["align"]["skipped"] is True and summary["align"]["distrusted"]
    assert main(["fuse", str(src), "-o", str(tmp_path / "b.png"), "--align", "none"]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_similarity_projection_keeps_the_image_centre():
    from stackmff.align.transforms import _project

    shear = np.array([[1.004, 0.003, 2.0], [-0.002, 0.998, -1.0], [0, 0, 1.0]])
    c = np.array([319.5, 179.5, 1.0])
    sim = _project(shear, "similarity", (319.5, 179.5))
    np.testing.assert_allclose(sim @ c, shear @ c, atol=1e-9)
    assert abs(sim[0, 0] - sim[1, 1]) < 1e-12 and abs(sim[0, 1] + sim[1, 0]) < 1e-12


@pytest.mark.shared
def test_phone_stack_gets_affine_and_subpixel_residuals(shared_data):
    """Hand-held phone sweep (rolling shutter, perspective): the measured residuals choose affine; every layer ends
    within half a pixel of its neighbour."""
    from stackmff.io import load_stack

    stack = load_stack(shared_data / "mobile_depth_suwajanakorn" / "keyboard").images
    res = align_stack(stack)
    assert res.mode == "affine" and res.failed == [] and res.invalid == {}
    assert np.nanmax(res.residuals) < 0.5 and res.reference not in (0, len(stack) - 1)


@pytest.mark.shared
def test_phone_stack_fused_by_default_is_as_sharp_as_its_sharpest_registered_layer(shared_data):
    """Issue 12's block check on the real 32-frame hand-held sweep: with the default alignment no textured 32x32
    block of V3's result falls below 0.4 of the sharpest registered layer's Laplacian energy there, and no edge
    appears that no layer has (doubled edges). The check sees misregistration: without alignment the same fusion
    leaves a tenth of the blocks below 0.4 (measured: auto 0 %, median 0.81; none 10 %, median 0.55)."""
    from metrics import block_sharpness
    from stackmff.io import load_stack

    stack = load_stack(shared_data / "mobile_depth_suwajanakorn" / "keyboard").images
    fuse = get_fusion_method("stackmff_v3")

    def check(layers):
        bs = block_sharpness(fuse(layers).image, layers)
        textured = bs.textured[0]
        return bs.ratio[0][textured].numpy(), bs.unsupported[0][textured].numpy()

    ratio, unsupported = check(align_stack(stack).images)
    assert ratio.size > 100  # enough textured blocks for a share to mean something
    assert (ratio < 0.4).mean() <= 0.02 and np.median(ratio) > 0.75, np.quantile(ratio, [0.02, 0.5]).round(3)
    assert unsupported.max() < 0.005, unsupported.max()
    ratio_none, _ = check(stack)
    assert (ratio_none < 0.4).mean() > 0.05 and np.median(ratio_none) < np.median(ratio) - 0.15


def test_registered_compact_stack_is_returned_as_is(tmp_path):
    """8-bit stacks loaded compactly (as the learned methods do) are checked without a float copy of the stack."""
    from stackmff.io import load_stack

    layers = _gt_cases(size=(224, 256), n=5)["invalid"][0]
    folder = _write_stack(tmp_path / "in", layers)
    comp = load_stack(folder, compact=True)
    res = align_stack(comp.images)
    assert res.skipped and res.images is comp.images and len(res.invalid) >= 2
    full = align_stack(load_stack(folder).images)
    assert full.invalid == res.invalid and full.reference == res.reference


def test_compact_stack_is_aligned_in_its_own_bit_depth(tmp_path):
    """8-bit layers are aligned into 8-bit layers (a quarter of float32), 16-bit ones into 16-bit layers."""
    from stackmff.io import CompactStack, load_stack

    warped = breathing_stack(seed=6)[0]
    folder = _write_stack(tmp_path / "in", warped)
    full, comp = load_stack(folder).images, load_stack(folder, compact=True).images
    a, b = align_stack(full, mode="similarity"), align_stack(comp, mode="similarity")
    assert isinstance(b.images, CompactStack) and b.images.nbytes * 4 == a.images.nbytes
    assert all(layer.integer_format == (np.dtype(np.uint8), 255.0) for layer in b.images.layers)
    np.testing.assert_allclose(b.matrices, a.matrices, atol=1e-9)
    # warped as 8-bit integers (OpenCV's fixed-point Lanczos) and rounded: within one 8-bit step of the float path,
    # and within half a step but for a few pixels
    diff = np.abs(np.asarray(b.images) - a.images)
    assert diff.max() <= 1 / 255 + 1e-6 and (diff > 0.5 / 255 + 1e-6).mean() < 0.002
    # frame="fill" fills uncovered pixels from the reference layer's integer pixels: the same bound
    fa, fb = align_stack(full, mode="similarity", frame="fill"), align_stack(comp, mode="similarity", frame="fill")
    assert np.abs(np.asarray(fb.images) - fa.images).max() <= 1 / 255 + 1e-6
    # the untouched reference layer comes back bit-exact from 8 bits
    c = align_stack(comp, mode="similarity", match_brightness=False)
    assert c.crop == a.crop
    x0, y0, w, h = c.crop
    ref = np.asarray(c.images[c.kept.index(c.reference)])
    np.testing.assert_array_equal(ref, full[c.reference][:, y0 : y0 + h, x0 : x0 + w])
    # 16-bit files: 16-bit aligned layers, within one 16-bit step of the float alignment
    deep = tmp_path / "deep"
    deep.mkdir()
    for k, layer in enumerate(warped):
        write_image(deep / f"{k:02d}.png", (layer.transpose(1, 2, 0) * 65535 + 0.5).astype(np.uint16))
    full16, comp16 = load_stack(deep).images, load_stack(deep, compact=True).images
    a16, b16 = align_stack(full16, mode="similarity"), align_stack(comp16, mode="similarity")
    assert b16.images.nbytes * 2 == a16.images.nbytes
    np.testing.assert_allclose(np.asarray(b16.images), a16.images, rtol=0, atol=1 / 65535)


def test_fuse_to_file_frees_the_original_layers_once_they_are_warped(tmp_path, monkeypatch):
    """The command holds one copy of the stack while fusing: the aligned layers replace the loaded ones."""
    import stackmff.fusion.run as run
    from stackmff.io import load_stack

    warped = breathing_stack(seed=6)[0]
    folder = _write_stack(tmp_path / "in", warped)
    seen = {}
    original = run.fuse_loaded

    def spy(stack, *args, **kwargs):
        before = stack.images
        out = original(stack, *args, **kwargs)
        seen["replaced"] = stack.images is not before and stack.images.shape[2:] != before.shape[2:]
        return out

    monkeypatch.setattr(run, "fuse_loaded", spy)
    info = run.fuse_to_file(folder, tmp_path / "f.png", "focus_measure", align="similarity")
    assert seen["replaced"]  # cropped, aligned layers; the loaded ones are no longer referenced
    assert (info["layers"], info["width"], info["height"]) == (5, warped.shape[3], warped.shape[2])  # the input's
    # a caller that keeps its stack (no release_input) gets it back untouched
    stack = load_stack(folder, compact=True)
    images = stack.images
    run.fuse_loaded(stack, "focus_measure", align="similarity")
    assert stack.images is images


def test_unrelated_frame_is_distrusted_and_disturbs_nothing(caplog):
    layers = _gt_cases()["breathing"][0]
    other = _gt_cases(seed=9)["clean"][0][3]  # a frame of another scene
    clean = align_stack(layers)
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        res = align_stack(np.concatenate([layers[:3], other[None], layers[3:]]))
    valid = [0, 1, 2, 4, 5, 6, 7]
    assert list(res.invalid) == [3] and res.failed == [3] and res.reference == valid[clean.reference]
    np.testing.assert_allclose(res.matrices[valid], clean.matrices, atol=1e-9)
    assert res.crop == clean.crop
    assert any("layer 3" in r.getMessage() and "failed" in r.getMessage() for r in caplog.records)


def test_auto_picks_affine_on_the_bundled_pcb_stack():
    """The real hand-held pcb stack (data/samples/pcb) has an anisotropic part (~0.7 px at 1024 px, measured against
    focus-stack's registration): auto must choose affine there, and a registered copy of it must pass untouched."""
    from pathlib import Path

    from stackmff.io import load_stack

    pcb = Path(__file__).resolve().parents[2] / "data" / "samples" / "pcb"
    stack = load_stack(pcb).images
    res = align_stack(stack, mode="auto")
    assert not res.skipped and res.mode == "affine", res.summary()
    same = np.repeat(stack[3:4], 4, axis=0)  # four copies of one layer: registered by construction
    assert align_stack(same, mode="auto").skipped
