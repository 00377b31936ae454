"""Tests for stack synthesis (upstream and physical) and the invalid-layer / shuffle augmentation."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stackmff.errors import StackMFFError
from stackmff.data.procedural import make_scene
from stackmff.data.synthesis import (
    INVALID_KINDS,
    SynthStack,
    disc_kernel,
    inject_invalid_layers,
    shuffle_layers,
    synthesize_physical,
    synthesize_upstream,
    upstream_bins,
)


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


# ---------------------------------------------------------------------------------------------------- augmentation


def test_shuffle_layers_keeps_gt_consistent(scene):
    s = synthesize_physical(scene.image, scene.disparity, 6, rng=0, noise=(0, 0))
    t = shuffle_layers(s, 5)
    assert sorted(t.focus.tolist()) == sorted(s.focus.tolist())
    np.testing.assert_array_equal(_gather(t), _gather(s))
    np.testing.assert_array_equal(t.focus[t.index], s.focus[s.index])


@pytest.mark.parametrize("seed", range(8))
def test_inject_invalid_layers_never_targets(scene, seed):
    depth = np.rint(scene.disparity * 255).astype(np.uint8)
    base = synthesize_upstream(scene.image, depth, 4)
    s = inject_invalid_layers(shuffle_layers(base, seed), seed, max_count=4)
    n_inv = s.n - 4
    assert 1 <= n_inv <= 4
    assert s.valid.sum() == 4
    assert set(np.unique(s.index)) <= set(np.flatnonzero(s.valid))
    np.testing.assert_array_equal(_gather(s), scene.image)  # upstream: the GT layer equals the AiF
    assert np.isnan(s.focus[~s.valid]).all()
    # and after another reshuffle
    t = shuffle_layers(s, seed + 100)
    assert set(np.unique(t.index)) <= set(np.flatnonzero(t.valid))
    np.testing.assert_array_equal(_gather(t), scene.image)


@pytest.mark.parametrize("kind", INVALID_KINDS)
def test_each_invalid_kind(scene, kind):
    base = synthesize_physical(scene.image, scene.disparity, 3, rng=0)
    s = inject_invalid_layers(base, 1, kinds=[kind], count=2)
    assert s.n == 5 and s.kinds.count(kind) == 2 and s.kinds.count("valid") == 3
    bad = np.flatnonzero(~s.valid)
    assert not np.isin(s.index, bad).any()
    for j in bad:
        lay = s.layers[j]
        assert lay.shape == (3, 72, 80) and 0 <= lay.min() and lay.max() <= 1
        if kind == "duplicate":
            src = s.dup_of[j]
            assert src < j and s.kinds[src] == "valid"  # the FIRST copy is the target
            np.testing.assert_array_equal(lay, s.layers[src])
        if kind == "blank":
            assert lay.std() < 0.05
        if kind == "blurred":  # defocused everywhere: less fine detail than the AiF
            lap = lambda x: np.abs(cv2.Laplacian(x.mean(0), cv2.CV_32F)).mean()  # noqa: E731
            assert lap(lay) < 0.5 * lap(s.aif)


def test_blurred_layer_has_the_noise_of_the_stack_it_joins(scene):
    from stackmff.fusion._common import noise_std

    for noise, lo, hi in (((1e-4, 2e-3), 0.5, 1.6), ((1e-3, 1e-2), 0.5, 1.6), ((0.0, 0.0), 0.0, 1.6)):
        base = synthesize_physical(scene.image, scene.disparity, 4, rng=0, noise=noise)
        s = inject_invalid_layers(base, 3, kinds=["blurred"], count=1)
        j = s.kinds.index("blurred")
        valid = np.median([noise_std(x) for x in base.layers])
        assert lo * valid < noise_std(s.layers[j]) < hi * valid, (noise, noise_std(s.layers[j]), valid)


def test_duplicate_first_copy_is_target_after_any_shuffle(scene):
    base = synthesize_physical(scene.image, scene.disparity, 3, rng=0)
    s = inject_invalid_layers(base, 0, kinds=["duplicate"], count=3)
    for seed in range(20):
        t = shuffle_layers(s, seed)
        for j in np.flatnonzero(np.array(t.kinds) == "duplicate"):
            src = t.dup_of[j]
            assert src < j and t.valid[src]
            np.testing.assert_array_equal(t.layers[j], t.layers[src])
        # the target layers are distinct arrays: no two valid layers are identical copies
        vs = t.layers[t.valid].reshape(3, -1)
        assert len({v.tobytes() for v in vs}) == 3
        np.testing.assert_array_equal(_gather(t), _gather(base))


def test_inject_rejects_bad_options(scene):
    base = synthesize_physical(scene.image, scene.disparity, 3, rng=0)
    with pytest.raises(StackMFFError, match="kind"):
        inject_invalid_layers(base, 0, kinds=["smudged"])
    with pytest.raises(StackMFFError, match="count"):
        inject_invalid_layers(base, 0, count=-1)
    assert inject_invalid_layers(base, 0, count=0) is base
