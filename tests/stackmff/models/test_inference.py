"""Tiled, streamed inference: exact gathers, streaming == whole forward, tiled ≈ untiled, memory plan, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from stackmff._checks import StackMFFError
from stackmff.fusion.registry import get_fusion_method
from stackmff.models.inference import (
    TilePlan,
    _blend_tiles,
    _pad_reflect,
    fuse_stack_v3,
    luma,
    plan_tiles,
    predict_logits,
    save_checkpoint,
)
from stackmff.models.registry import create_model, get_config


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("v3_small").eval()


def _stack(n=4, c=3, h=50, w=70, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


def test_luma_is_rec601():
    img = np.zeros((3, 1, 3), np.float32)
    img[0, 0, 0], img[1, 0, 1], img[2, 0, 2] = 1, 1, 1
    np.testing.assert_allclose(luma(img)[0], [0.299, 0.587, 0.114], atol=1e-7)


def test_streamed_logits_equal_the_whole_forward(small_model):
    lum = _stack(5, 1, 40, 70)[:, 0]  # H, W not multiples of 32
    with torch.no_grad():
        full = small_model(torch.from_numpy(_pad_reflect(lum, 64, 96))[None])[0, :, :40, :70]
    streamed = predict_logits(small_model, lum, layer_group=2, chunk_pixels=200)  # several groups and row chunks
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n", "c", "h", "w"), [(2, 3, 33, 47), (6, 1, 64, 64), (3, 3, 5, 90)])
def test_gather_returns_exact_source_values(small_model, n, c, h, w):
    st = (np.random.default_rng(n).integers(0, 65536, (n, c, h, w)) / 65535.0).astype(np.float32)  # 16-bit values
    res = fuse_stack_v3(st, small_model)
    assert res.image.shape == (c, h, w) and res.index_map.shape == (h, w) and res.confidence.shape == (h, w)
    assert res.index_map.min() >= 0 and res.index_map.max() < n
    expect = np.take_along_axis(st, res.index_map[None, None].astype(np.int64).repeat(c, 1), 0)[0]
    assert np.array_equal(res.image, expect)
    assert np.all((res.confidence >= 1.0 / n - 1e-6) & (res.confidence <= 1.0 + 1e-6))


def test_tiled_blending_of_a_local_function_agrees_away_from_tile_borders():
    # a 3x3 box filter differs from the whole-image result only on the 1-px tile borders, which feathering weighs
    # down; the blended decision must agree almost everywhere and the gather must stay exact
    st = _stack(4, 3, 90, 110, seed=3)

    def fn(lum):
        return np.stack([uniform_filter(x, 3, mode="reflect") for x in lum]) * 20

    whole = _blend_tiles(st, fn, TilePlan(128, 0, 4, 4096, False), regress=False)
    tiled = _blend_tiles(st, fn, TilePlan(32, 8, 4, 4096, True), regress=False)
    assert (whole[1] == tiled[1]).mean() > 0.97
    expect = np.take_along_axis(st, tiled[1][None, None].astype(np.int64).repeat(3, 1), 0)[0]
    np.testing.assert_array_equal(tiled[0], expect)


def test_tiled_blending_of_pointwise_logits_is_exact():
    st = _stack(3, 3, 70, 100, seed=4)

    def fn(lum):
        return -np.abs(lum - 0.5) * 10

    whole = _blend_tiles(st, fn, TilePlan(128, 0, 3, 4096, False), regress=False)
    tiled = _blend_tiles(st, fn, TilePlan(32, 12, 3, 4096, True), regress=False)
    np.testing.assert_array_equal(whole[1], tiled[1])
    np.testing.assert_allclose(whole[2], tiled[2], atol=1e-6)


def test_tiled_network_close_to_untiled(small_model):
    st = _stack(4, 3, 96, 128, seed=5)
    whole = fuse_stack_v3(st, small_model)
    tiled = fuse_stack_v3(st, small_model, tile=64, overlap=16)
    assert not whole.extras["tiled"] and tiled.extras["tiled"]
    assert (whole.index_map == tiled.index_map).mean() > 0.9
    assert np.abs(whole.confidence - tiled.confidence).mean() < 0.05


def test_plan_respects_budget_and_bounds_tile():
    cfg = get_config("v3")
    small = plan_tiles(100, 100, 10, cfg, memory_budget_mb=512)
    assert not small.tiled
    big = plan_tiles(3000, 4000, 10, cfg, memory_budget_mb=512)
    assert big.tiled and big.tile % 32 == 0 and big.tile <= 2048 and 0 < big.overlap < big.tile // 2
    tighter = plan_tiles(3000, 4000, 10, cfg, memory_budget_mb=256)
    assert tighter.tile < big.tile
    assert big.layer_group == 1  # layers streamed one at a time through the encoder when memory is tight
    assert plan_tiles(64, 64, 10, cfg, memory_budget_mb=512).layer_group == 10
    even = plan_tiles(1141, 1521, 6, cfg, memory_budget_mb=1024)  # tiles spread evenly: no sliver tiles
    k = -(-(1521 - even.overlap) // (even.tile - even.overlap))
    assert k * (even.tile - even.overlap) + even.overlap - 1521 < even.tile - even.overlap


def test_bad_options_raise(small_model):
    st = _stack()
    with pytest.raises(StackMFFError, match="multiple of 32"):
        fuse_stack_v3(st, small_model, tile=50)
    with pytest.raises(StackMFFError, match="at least 2 layers"):
        fuse_stack_v3(st[:1], small_model)
    with pytest.raises(StackMFFError, match="precision"):
        fuse_stack_v3(st, small_model, precision="int8")
    with pytest.raises(StackMFFError, match="memory_budget_mb"):
        fuse_stack_v3(st, small_model, memory_budget_mb=1)


def test_registered_method_uses_given_weights(tmp_path, small_model):
    path = save_checkpoint(tmp_path / "w.pt", small_model)
    st = _stack(3, 3, 40, 40)
    res = get_fusion_method("stackmff_v3")(st, weights=path, device="cpu")
    ref = fuse_stack_v3(st, small_model)
    np.testing.assert_array_equal(res.index_map, ref.index_map)
    with pytest.raises(StackMFFError, match="not found"):
        get_fusion_method("stackmff_v3")(st, weights=tmp_path / "missing.pt")
    assert get_fusion_method("stackmff_v3").learned and get_fusion_method("stackmff_v3_star").ordered


def test_star_head_gives_rounded_expected_index(tmp_path):
    torch.manual_seed(0)
    m = create_model("v3_star", dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)).eval()
    st = _stack(5, 3, 32, 32)
    res = fuse_stack_v3(st, m)
    lum = np.stack([luma(x) for x in st])
    lg = predict_logits(m, lum)
    p = lg.softmax(0)
    expect = torch.round((p * torch.arange(5.0)[:, None, None]).sum(0)).to(torch.int32).numpy()
    np.testing.assert_array_equal(res.index_map, expect)


def test_shipped_weights_pick_the_sharp_layer():
    import cv2

    from stackmff.models.inference import DEFAULT_WEIGHTS

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    rng = np.random.default_rng(0)
    img = cv2.resize(rng.random((24, 32, 3)).astype(np.float32), (128, 96), interpolation=cv2.INTER_NEAREST)
    img = np.clip(img + 0.1 * rng.standard_normal(img.shape).astype(np.float32), 0, 1).transpose(2, 0, 1)
    blur = np.stack([cv2.GaussianBlur(c, (0, 0), 3) for c in img])  # the same scene, defocused everywhere
    fm = get_fusion_method("stackmff_v3")
    for stack, sharp in ((np.stack([blur, img]), 1), (np.stack([img, blur, blur]), 0)):
        res = fm(stack, device="cpu")
        assert (res.index_map == sharp).mean() > 0.95
        assert np.array_equal(
            res.image, stack[res.index_map, :, np.arange(96)[:, None], np.arange(128)].transpose(2, 0, 1)
        )


def _scene_stack(n=5, h=96, w=128, seed=0):
    # one textured scene, each layer defocused by a different amount: valid layers of one stack
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    img = img.transpose(2, 0, 1)
    return np.stack([img] + [np.stack([cv2.GaussianBlur(c, (0, 0), 0.7 * k) for c in img]) for k in range(1, n)])


def test_photometric_outliers_flags_exposure_and_blank_layers_only():
    from stackmff.models.inference import photometric_outliers

    st = _scene_stack()
    assert not photometric_outliers(st).any()  # defocus alone never rejects a layer
    noisy = np.clip(st[2] + 0.1 * np.random.default_rng(1).standard_normal(st[2].shape), 0, 1).astype(np.float32)
    bad = np.concatenate([st, np.clip(st[1:2] * 2.2, 0, 1), np.full_like(st[:1], 0.9), noisy[None]])
    np.testing.assert_array_equal(photometric_outliers(bad), [False] * 5 + [True, True, False])
    assert not photometric_outliers(bad[[0, 5]]).any()  # two layers: nothing to compare against, keep both


def test_rejected_layers_are_never_picked_and_indices_refer_to_the_input(small_model):
    st = _scene_stack()
    bad = np.concatenate([st[:2], np.clip(st[:1] * 2.2, 0, 1), st[2:]])  # exposure-shifted copy at position 2
    res = fuse_stack_v3(bad, small_model)
    assert res.extras["rejected_layers"] == [2]
    assert not (res.index_map == 2).any()
    h, w = res.index_map.shape
    assert np.array_equal(res.image, bad[res.index_map, :, np.arange(h)[:, None], np.arange(w)].transpose(2, 0, 1))
    kept = fuse_stack_v3(np.delete(bad, 2, axis=0), small_model)  # same as fusing without that layer
    np.testing.assert_array_equal(res.image, kept.image)
    assert fuse_stack_v3(bad, small_model, reject_outliers=False).extras["rejected_layers"] == []


def test_bf16_and_fp32_pick_the_same_layers_with_the_shipped_weights():
    from stackmff.models.inference import DEFAULT_WEIGHTS, load_model

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    m = load_model(DEFAULT_WEIGHTS)
    st = _scene_stack(n=4, seed=3)
    a, b = fuse_stack_v3(st, m, precision="fp32"), fuse_stack_v3(st, m, precision="bf16")
    assert (a.extras["precision"], b.extras["precision"]) == ("fp32", "bf16")
    assert (a.index_map == b.index_map).mean() > 0.98
    assert (a.index_map == 0).mean() > 0.9  # and both pick the sharp layer


def test_soft_gather_is_the_probability_weighted_mean(small_model):
    st = _stack(4, 3, 40, 70)
    res = fuse_stack_v3(st, small_model, gather="soft", precision="fp32")
    p = predict_logits(small_model, np.stack([luma(x) for x in st])).softmax(0).numpy()  # (N, H, W)
    np.testing.assert_allclose(res.image, (p[:, None] * st).sum(0), atol=1e-5)
    hard = fuse_stack_v3(st, small_model, precision="fp32")
    np.testing.assert_array_equal(res.index_map, hard.index_map)  # same decision, different colour rule
    assert not np.array_equal(res.image, hard.image)
    with pytest.raises(StackMFFError, match="gather"):
        fuse_stack_v3(st, small_model, gather="mean")


@pytest.mark.parametrize("scene", ["petteri_focus_stack/pcb", "cmcguinness_ring/ring"])
def test_real_stacks_lose_no_layer_to_outlier_rejection_but_a_shifted_copy_is_caught(shared_data, scene):
    from stackmff.io import load_stack
    from stackmff.models.inference import photometric_outliers

    st = load_stack(shared_data / scene).images
    assert not photometric_outliers(st).any()
    shifted = np.clip(st[len(st) // 2] * 0.45 + 0.05, 0, 1)[None]  # the same frame, ~1.2 stops darker
    assert photometric_outliers(np.concatenate([st, shifted])).nonzero()[0].tolist() == [len(st)]
