"""Tests for the "general" augmentation: layer shuffling and invalid layers (JPEG layers: test_photos.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from stackmff.data.augment import INVALID_KINDS, inject_invalid_layers, shuffle_layers
from stackmff.data.procedural import make_scene
from stackmff.data.synthesis import SynthStack, synthesize_physical, synthesize_upstream
from stackmff.errors import StackMFFError


def _gather(stack: SynthStack) -> np.ndarray:
    """The image picked by the GT index map, ``(3, H, W)``."""
    return np.take_along_axis(stack.layers, stack.index[None, None], 0)[0]


@pytest.fixture(scope="module")
def scene():
    return make_scene(5, 72, 80)


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
    from stackmff._layer_stats import noise_std

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
