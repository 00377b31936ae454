"""The memory-saving paths of the classical methods give the same result as the whole-stack, whole-image ones."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from _helpers import synthetic_stack

from stackmff.fusion import get_fusion_method
from stackmff.fusion._common import luma_hwc, majority_filter, to_chw, to_hwc
from stackmff.fusion.laplacian_pyramid import (
    _base_focus,
    _salience,
    build_laplacian_pyramid,
    collapse_laplacian_pyramid,
    fuse_laplacian_pyramid,
)
from stackmff.io import load_stack, save_image

CLASSICAL = ["focus_measure", "guided_filter", "laplacian_pyramid", "wavelet"]


def _whole_image_pyramid(stack, *, levels, window=3, consistency=3, base="average"):
    # the straightforward computation: every layer's full pyramid, per-level argmax, majority filter, collapse
    pyrs = [build_laplacian_pyramid(to_hwc(layer), levels) for layer in stack]
    fused = []
    for lev in range(levels + 1):
        bands = np.stack([p[lev] for p in pyrs])
        if lev == levels and base == "average":
            acc = np.zeros_like(bands[0])
            for b in bands:
                acc += b / np.float32(len(stack))
            fused.append(acc)
            continue
        if lev == levels:
            sal = np.stack([_base_focus(layer, bands[0].shape) for layer in stack])
        else:
            sal = np.stack([_salience(luma_hwc(b), window) for b in bands])
        choice = majority_filter(np.argmax(sal, axis=0).astype(np.int32), consistency)
        idx = choice[None, ..., None] if bands.ndim == 4 else choice[None]
        fused.append(np.take_along_axis(bands, idx, axis=0)[0])
    return to_chw(np.clip(collapse_laplacian_pyramid(fused), 0.0, 1.0))


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "opts"),
    [
        (3, 3, 97, 131, {"strip_rows": 16}),  # odd sizes, many strips
        (4, 1, 64, 80, {"strip_rows": 8}),
        (3, 3, 150, 101, {"strip_rows": 32, "window": 5, "consistency": 5, "base": "focus"}),
        (2, 3, 70, 40, {"strip_rows": 1000, "levels": 1}),  # one strip, one level
    ],
)
def test_laplacian_pyramid_in_strips_equals_the_whole_image(n, c, h, w, opts):
    rng = np.random.default_rng(n * h + w)
    stack = rng.random((n, c, h, w)).astype(np.float32)
    blur = [cv2.GaussianBlur(x.transpose(1, 2, 0), (0, 0), 0.5 + k).reshape(h, w, c) for k, x in enumerate(stack)]
    stack = np.stack([b.transpose(2, 0, 1) for b in blur])
    levels = opts.get("levels", 3)
    got = fuse_laplacian_pyramid(stack, levels=levels, **{k: v for k, v in opts.items() if k != "levels"}).image
    ref = _whole_image_pyramid(
        stack,
        levels=levels,
        window=opts.get("window", 3),
        consistency=opts.get("consistency", 3),
        base=opts.get("base", "average"),
    )
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize("name", CLASSICAL)
def test_classical_methods_give_the_same_result_on_a_compact_stack(name, tmp_path):
    stack, _, _ = synthetic_stack(3, height=72, width=90, seed=3)
    for k, layer in enumerate(stack):
        save_image(tmp_path / f"{k}.png", layer)
    full, comp = load_stack(tmp_path), load_stack(tmp_path, compact=True)
    fm = get_fusion_method(name)
    a, b = fm(full.images), fm(comp.images)
    np.testing.assert_array_equal(a.image, b.image)
    if a.index_map is not None:
        np.testing.assert_array_equal(a.index_map, b.index_map)


def _blurred_stack(n, c, h, w, seed):
    rng = np.random.default_rng(seed)
    stack = rng.random((n, c, h, w)).astype(np.float32)
    blur = [cv2.GaussianBlur(x.transpose(1, 2, 0), (0, 0), 0.5 + k).reshape(h, w, c) for k, x in enumerate(stack)]
    return np.stack([b.transpose(2, 0, 1) for b in blur])


@pytest.mark.parametrize(
    ("name", "n", "c", "h", "w", "opts"),
    [
        ("focus_measure", 3, 3, 97, 131, {"strip_rows": 7}),  # odd sizes, many strips thinner than the margin
        ("focus_measure", 4, 1, 181, 83, {"strip_rows": 32, "smooth_radius": 9}),
        ("focus_measure", 3, 3, 121, 77, {"strip_rows": 20, "measure": "sml", "window": 3, "consistency": 7}),
        ("focus_measure", 2, 1, 64, 50, {"strip_rows": 16, "smooth_radius": 0, "consistency": 1}),
        ("guided_filter", 3, 3, 233, 101, {"strip_rows": 31}),  # the paper's radii (45, 7) on an odd size
        ("guided_filter", 4, 1, 157, 203, {"strip_rows": 16}),
        ("guided_filter", 3, 3, 95, 61, {"strip_rows": 9, "r1": 12, "r2": 3, "average_size": 15}),
    ],
)
def test_local_methods_in_strips_equal_the_whole_image(name, n, c, h, w, opts):
    # one strip as tall as the image is the whole-image computation; thin strips must give the same bits
    stack = _blurred_stack(n, c, h, w, seed=n * h + w)
    fm = get_fusion_method(name)
    got = fm(stack, **opts)
    ref = fm(stack, **{**opts, "strip_rows": h})
    np.testing.assert_array_equal(got.image, ref.image)
    if ref.index_map is not None:
        np.testing.assert_array_equal(got.index_map, ref.index_map)
        np.testing.assert_array_equal(got.confidence, ref.confidence)


def _whole_image_wavelet(stack, *, wavelet, levels, consistency=3):
    # the straightforward computation: every layer's full transform, per-scale argmax, majority filter, inverse
    import pywt

    coeffs = [pywt.wavedec2(to_hwc(x), wavelet, mode="symmetric", level=levels, axes=(0, 1)) for x in stack]
    fused = [np.zeros_like(coeffs[0][0])]
    for cf in coeffs:
        fused[0] += cf[0] / np.float32(len(stack))
    for lev in range(1, levels + 1):
        act = np.stack([sum(np.abs(luma_hwc(b)) for b in cf[lev]).astype(np.float32) for cf in coeffs])
        choice = majority_filter(np.argmax(act, axis=0).astype(np.int32), consistency)
        fused.append(
            tuple(
                np.choose(choice[..., None] if b.ndim == 3 else choice, [cf[lev][i] for cf in coeffs])
                for i, b in enumerate(coeffs[0][lev])
            )
        )
    h, w = stack.shape[2:]
    return to_chw(np.clip(pywt.waverec2(fused, wavelet, mode="symmetric", axes=(0, 1))[:h, :w], 0.0, 1.0))


@pytest.mark.parametrize(
    ("n", "c", "h", "w", "opts"),
    [
        (3, 3, 301, 257, {"wavelet": "bior4.4", "levels": 4, "strip_rows": 16}),  # odd sizes, short last strips
        (3, 1, 133, 97, {"wavelet": "db4", "levels": 3, "strip_rows": 6}),
        (4, 3, 97, 131, {"wavelet": "haar", "levels": 3, "strip_rows": 2, "consistency": 5}),
        (2, 3, 70, 64, {"wavelet": "bior4.4", "levels": 1, "strip_rows": 10}),  # one level: all of it in strips
        (3, 3, 150, 101, {"wavelet": "sym5", "levels": 2, "strip_rows": 34}),
    ],
)
def test_wavelet_finest_level_in_strips_equals_the_whole_image(n, c, h, w, opts):
    stack = _blurred_stack(n, c, h, w, seed=h + w)
    got = get_fusion_method("wavelet")(stack, **opts).image
    ref = _whole_image_wavelet(
        stack, wavelet=opts["wavelet"], levels=opts["levels"], consistency=opts.get("consistency", 3)
    )
    np.testing.assert_array_equal(got, ref)
