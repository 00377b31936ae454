"""Tests for stack synthesis (upstream and physical) and the SynthStack layer-order rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stackmff.data.procedural import make_scene
from stackmff.data.synthesis import SynthStack, disc_kernel, synthesize_physical, synthesize_upstream, upstream_bins
from stackmff.errors import StackMFFError


def _gather(stack: SynthStack) -> np.ndarray:
    """The image picked by the GT index map, ``(3, H, W)``."""
    return np.take_along_axis(stack.layers, stack.index[None, None], 0)[0]


@pytest.fixture(scope="module")
def scene():
    return make_scene(5, 72, 80)


# ---------------------------------------------------------------------------------------------------- upstream


def test_upstream_bins_edges():
    d = np.array([[0, 31, 32, 63, 64, 254, 255]], np.uint8)
    np.testing.assert_array_equal(upstream_bins(d, 8), [[0, 0, 1, 1, 2, 7, 7]])
    np.testing.assert_array_equal(upstream_bins(d, 1), [[0] * 7])


def test_upstream_matches_independent_reference(scene):
    depth = np.rint(scene.disparity * 255).astype(np.uint8)
    n = 5
    s = synthesize_upstream(scene.image, depth, n)
    assert s.layers.shape == (n, 3, 72, 80) and s.index.dtype == np.int64
    # reference written pixel-by-bin straight from the SPEC text
    hwc = scene.image.transpose(1, 2, 0)
    bins = np.minimum(depth.astype(int) * n // 255, n - 1)
    for k in range(n):
        ref = np.zeros_like(hwc)
        for d in range(n):
            t = abs(d - k)
            img = hwc if t == 0 else cv2.GaussianBlur(hwc, (2 * t + 1, 2 * t + 1), 0)
            ref[bins == d] = img[bins == d]
        np.testing.assert_array_equal(s.layers[k].transpose(1, 2, 0), ref)
    np.testing.assert_array_equal(s.index, bins)


def test_upstream_gt_layer_equals_aif_everywhere(scene):
    depth = np.rint(scene.disparity * 255).astype(np.uint8)
    for n in (2, 7, 24):
        s = synthesize_upstream(scene.image, depth, n, rng=n, shuffle=True)
        np.testing.assert_array_equal(_gather(s), scene.image)
        # every other layer differs from the AiF somewhere it is not the target
        for k in range(n):
            if (s.index == k).all():
                continue
            assert np.abs(s.layers[k] - scene.image).max() > 0


def test_upstream_rejects_bad_input(scene):
    with pytest.raises(StackMFFError, match="depth_u8"):
        synthesize_upstream(scene.image, np.zeros((5, 5), np.uint8), 3)
    with pytest.raises(StackMFFError, match=r"0\.\.255"):
        synthesize_upstream(scene.image, np.full(scene.disparity.shape, 300), 3)
    with pytest.raises(StackMFFError, match="n_layers"):
        synthesize_upstream(scene.image, np.zeros(scene.disparity.shape, np.uint8), 0)
    with pytest.raises(StackMFFError, match="RGB"):
        synthesize_upstream(scene.image[:1], np.zeros(scene.disparity.shape, np.uint8), 3)


# ---------------------------------------------------------------------------------------------------- physical


def test_disc_kernel():
    assert disc_kernel(0.0).shape == (1, 1) and disc_kernel(0.49).shape == (1, 1)
    for r in (1.0, 2.5, 6.0, 10.0):
        k = disc_kernel(r)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and abs(k.sum() - 1) < 1e-6
        # second moment of a uniform disc of radius r is r^2 / 2, plus 1/6 for pixel-area sampling
        y, x = np.mgrid[: k.shape[0], : k.shape[1]] - k.shape[0] // 2
        assert (k * (x**2 + y**2)).sum() == pytest.approx(r**2 / 2 + 1 / 6, rel=0.05 if r > 2 else 0.25)
        np.testing.assert_allclose(k, k.T)


def test_physical_shapes_and_gt_is_nearest_focus(scene):
    s = synthesize_physical(scene.image, scene.disparity, 6, rng=0)
    assert s.layers.shape == (6, 3, 72, 80) and s.layers.dtype == np.float32
    assert s.index.shape == (72, 80) and s.index.dtype == np.int64
    assert np.all(np.diff(s.focus) > 0)  # far -> near
    dist = np.abs(scene.disparity[None] - s.focus[:, None, None])
    np.testing.assert_array_equal(s.index, dist.argmin(0))
    assert 0.0 <= s.layers.min() and s.layers.max() <= 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_physical_gt_layer_is_closest_to_aif(seed):
    sc = make_scene(seed, 80, 80, slant=0.0)
    max_coc = 6.0
    s = synthesize_physical(sc.image, sc.disparity, 6, rng=seed, noise=(0, 0), max_coc=max_coc)
    err = np.abs(s.layers - s.aif[None]).max(1)  # (N, H, W)
    gt_err = np.take_along_axis(err, s.index[None], 0)[0]
    # Away from nearer surfaces (whose blur physically spills over), the GT layer IS the AiF: error 0 <= any layer.
    r = int(np.ceil(max_coc)) + 2
    local_max = cv2.dilate(sc.disparity, np.ones((2 * r + 1, 2 * r + 1), np.uint8), borderType=cv2.BORDER_REPLICATE)
    clear = local_max <= sc.disparity + 1e-6
    assert clear.mean() > 0.2  # enough unoccluded pixels for the check below (scene-dependent, ~0.29-0.6)
    assert gt_err[clear].max() == 0.0
    # Everywhere, the GT layer is (within 0.02) the closest layer at the large majority of pixels.
    assert (gt_err <= err.min(0) + 0.02).mean() > 0.9
    # Defocus is real: far from its focus plane a layer differs from the AiF.
    far = np.abs(sc.disparity - s.focus[0]) > 0.5
    assert err[0][far].mean() > 0.02


def test_physical_occlusion_blur_spreads_over_background():
    # a sharp-edged near square over a far flat grey background; focus on the background
    h = w = 64
    img = np.full((3, h, w), 0.2, np.float32)
    disp = np.zeros((h, w), np.float32)
    img[:, 20:44, 20:44] = 0.9
    disp[20:44, 20:44] = 1.0
    s = synthesize_physical(img, disp, 1, rng=0, focus=[0.0], max_coc=6.0, noise=(0, 0))
    row = s.layers[0, 0, 32]
    # the near square's blur brightens the background just outside its edge (it spreads OVER the background) ...
    assert row[17] > 0.25 and row[46] > 0.25
    # ... and the far background far away stays exact
    assert row[2] == pytest.approx(0.2) and row[61] == pytest.approx(0.2)
    # focused on the square instead: the square is exact, and a uniform background stays uniform (no dark halo)
    s2 = synthesize_physical(img, disp, 1, rng=0, focus=[1.0], max_coc=6.0, noise=(0, 0))
    np.testing.assert_allclose(s2.layers[0][:, 20:44, 20:44], 0.9, atol=1e-6)
    np.testing.assert_allclose(s2.layers[0][:, :, :18], 0.2, atol=1e-5)


def test_physical_noise_breathing_exposure(scene):
    clean = synthesize_physical(scene.image, scene.disparity, 4, rng=1, noise=(0, 0))
    noisy = synthesize_physical(scene.image, scene.disparity, 4, rng=1, noise=(0, 0.02))
    resid = noisy.layers - clean.layers
    inside = (clean.layers > 0.1) & (clean.layers < 0.9)  # away from clipping
    assert resid[inside].std() == pytest.approx(0.02, rel=0.1)
    br = synthesize_physical(scene.image, scene.disparity, 4, rng=1, noise=(0, 0), breathing=0.05)
    assert np.abs(br.layers[0] - clean.layers[0]).mean() > 1e-3  # layers rescaled
    np.testing.assert_array_equal(br.index, clean.index)  # GT stays in the reference frame
    ex = synthesize_physical(scene.image, scene.disparity, 4, rng=1, noise=(0, 0), exposure_jitter=0.2)
    ratio = [np.median(ex.layers[k][inside[k]] / np.maximum(clean.layers[k][inside[k]], 1e-3)) for k in range(4)]
    assert np.ptp(ratio) > 0.02


def test_physical_deterministic(scene):
    a = synthesize_physical(scene.image, scene.disparity, 5, rng=3)
    b = synthesize_physical(scene.image, scene.disparity, 5, rng=3)
    c = synthesize_physical(scene.image, scene.disparity, 5, rng=4)
    assert np.array_equal(a.layers, b.layers) and np.array_equal(a.index, b.index)
    assert not np.array_equal(a.layers, c.layers)


def test_physical_rejects_bad_input(scene):
    with pytest.raises(StackMFFError, match="disparity"):
        synthesize_physical(scene.image, scene.disparity[:10], 3, rng=0)
    bad = scene.disparity.copy()
    bad[0, 0] = np.nan
    with pytest.raises(StackMFFError, match="NaN"):
        synthesize_physical(scene.image, bad, 3, rng=0)
    with pytest.raises(StackMFFError, match="float"):
        synthesize_physical((scene.image * 255).astype(np.uint8), scene.disparity, 3, rng=0)


# ---------------------------------------------------------------------------------------------------- layer order


def test_reordered_moves_the_ground_truth_with_the_layers(scene):
    s = synthesize_physical(scene.image, scene.disparity, 4, rng=0, noise=(0, 0))
    order = np.array([2, 0, 3, 1])
    t = s.reordered(order)
    for j, k in enumerate(order):
        np.testing.assert_array_equal(t.layers[j], s.layers[k])
        assert t.focus[j] == s.focus[k]
    np.testing.assert_array_equal(_gather(t), _gather(s))
    assert t.layers is not s.layers and s.reordered(np.arange(4)).kinds == s.kinds


def test_reordered_makes_the_first_copy_the_target():
    layers = np.random.default_rng(0).random((3, 3, 4, 4), dtype=np.float32)
    layers[2] = layers[0]
    s = SynthStack(
        layers=layers,
        index=np.zeros((4, 4), np.int64),
        aif=layers[0].copy(),
        focus=np.array([0.0, 1.0, np.nan], np.float32),
        kinds=("valid", "valid", "duplicate"),
        dup_of=np.array([-1, -1, 0]),
    )
    t = s.reordered(np.array([2, 1, 0]))  # the copy now comes first: it becomes the target
    assert t.kinds == ("valid", "valid", "duplicate") and t.dup_of.tolist() == [-1, -1, 0]
    assert (t.index == 0).all() and t.focus[0] == 0.0 and np.isnan(t.focus[2])
