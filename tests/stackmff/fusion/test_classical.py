"""Registry-driven tests of every classical (non-learned) fusion method on synthetic stacks with a known AiF image."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import best_layer_psnr, psnr, synthetic_stack

from stackmff.errors import StackMFFError
from stackmff.fusion import DEFAULT_METHOD, fuse, get_fusion_method, list_methods

CLASSICAL = [m.name for m in list_methods() if not m.learned]


def test_the_four_classical_methods_are_registered():
    assert {"focus_measure", "laplacian_pyramid", "guided_filter", "wavelet"} <= set(CLASSICAL)
    assert get_fusion_method(DEFAULT_METHOD).name == DEFAULT_METHOD
    assert "focus_measure" in GATHER  # at least one method returns an index map
    for name in CLASSICAL:
        assert get_fusion_method(name).description.strip()


@pytest.mark.parametrize("name", CLASSICAL)
@pytest.mark.parametrize(("n", "channels", "seed"), [(2, 3, 0), (4, 1, 1), (6, 3, 2)])
def test_beats_best_single_layer(name, n, channels, seed):
    stack, aif, _ = synthetic_stack(n, channels=channels, seed=seed)
    result = get_fusion_method(name)(stack)
    assert result.image.shape == aif.shape
    assert result.image.dtype == np.float32
    assert np.isfinite(result.image).all()
    assert result.image.min() >= 0.0 and result.image.max() <= 1.0
    gain = psnr(result.image, aif) - best_layer_psnr(stack, aif)
    assert gain >= 3.0, f"{name}: only {gain:.2f} dB above the best single layer"


@pytest.mark.parametrize("name", CLASSICAL)
def test_identical_layers_give_that_layer(name):
    # a stack of copies of one image: nothing to choose, every method must return the image itself
    _, aif, _ = synthetic_stack(2, height=64, width=80, seed=5)
    stack = np.stack([aif, aif, aif])
    result = get_fusion_method(name)(stack)
    np.testing.assert_allclose(result.image, aif, atol=2e-3)


@pytest.mark.parametrize("name", CLASSICAL)
def test_odd_sizes_and_gray(name):
    stack, _, _ = synthetic_stack(3, height=37, width=53, channels=1, seed=3)
    result = get_fusion_method(name)(stack)
    assert result.image.shape == (1, 37, 53)
    if result.index_map is not None:
        assert result.index_map.shape == (37, 53)


GATHER = [
    m for m in CLASSICAL if get_fusion_method(m)(synthetic_stack(2, height=16, width=16)[0]).index_map is not None
]


@pytest.mark.parametrize("name", GATHER)
class TestGatherMethods:
    def test_index_map_gathers_exact_source_values(self, name):
        stack, _, depth = synthetic_stack(5, seed=4)
        result = get_fusion_method(name)(stack)
        idx = result.index_map
        assert idx.shape == depth.shape and idx.min() >= 0 and idx.max() < 5
        expected = np.take_along_axis(stack, idx[None, None], axis=0)[0]
        np.testing.assert_array_equal(result.image, expected)
        assert (idx == depth).mean() > 0.85  # the index map finds the sharp layer almost everywhere
        if result.confidence is not None:
            assert result.confidence.shape == depth.shape
            assert 0.0 <= result.confidence.min() and result.confidence.max() <= 1.0

    def test_layer_order_only_permutes_the_index_map(self, name):
        stack, _, _ = synthetic_stack(5, seed=6)
        perm = np.array([3, 0, 4, 2, 1])
        base = get_fusion_method(name)(stack)
        shuffled = get_fusion_method(name)(stack[perm])
        np.testing.assert_array_equal(shuffled.image, base.image)
        mapped = perm[shuffled.index_map]
        differ = mapped != base.index_map
        # where the two picks differ, the layers must hold identical pixels there (an exact tie, e.g. two layers
        # blurred equally far from focus); elsewhere the index map is just permuted
        ys, xs = np.nonzero(differ)
        np.testing.assert_array_equal(stack[mapped[ys, xs], :, ys, xs], stack[base.index_map[ys, xs], :, ys, xs])
        assert differ.mean() < 0.01


@pytest.mark.parametrize("name", CLASSICAL)
def test_bad_stacks_raise_one_line_errors(name):
    method = get_fusion_method(name)
    with pytest.raises(StackMFFError, match="at least 2 layers"):
        method(np.zeros((1, 3, 16, 16), np.float32))
    with pytest.raises(StackMFFError, match="must have shape"):
        method(np.zeros((3, 16, 16), np.float32))
    with pytest.raises(StackMFFError, match="1 or 3 channels"):
        method(np.zeros((2, 4, 16, 16), np.float32))
    bad = np.zeros((2, 3, 16, 16), np.float32)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(StackMFFError, match="NaN"):
        method(bad)


def test_fuse_front_door_validates_and_dispatches():
    stack, _, _ = synthetic_stack(3, height=32, width=32)
    direct = get_fusion_method("laplacian_pyramid")(stack).image
    np.testing.assert_array_equal(fuse(stack, "laplacian_pyramid").image, direct)
    with pytest.raises(StackMFFError, match="unknown method"):
        fuse(stack, "no_such_method")
