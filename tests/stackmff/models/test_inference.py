"""Tiled, streamed inference: exact gathers, streaming == whole forward, tiled ≈ untiled, memory plan, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from stackmff.color import luma
from stackmff.errors import StackMFFError
from stackmff.fusion.registry import get_fusion_method
from stackmff.models.inference import (
    TilePlan,
    _blend_tiles,
    _pad_reflect,
    fuse_stack_v3,
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


def test_streamed_logits_equal_the_whole_forward(small_model):
    lum = _stack(5, 1, 40, 70)[:, 0]  # H, W not multiples of 32
    with torch.no_grad():
        full = small_model(torch.from_numpy(_pad_reflect(lum, 64, 96))[None])[0, :, :40, :70]
    streamed = predict_logits(small_model, lum, layer_group=2, chunk_pixels=200)  # several groups and row chunks
    torch.testing.assert_close(streamed, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("n", "c", "h", "w"), [(2, 3, 33, 47), (6, 1, 64, 64), (3, 3, 5, 90)])
def test_gather_returns_exact_source_values(small_model, n, c, h, w):
    st = (np.random.default_rng(n).integers(0, 65536, (n, c, h, w)) / 65535.0).astype(np.float32)  # 16-bit values
    res = fuse_stack_v3(st, small_model, gather="hard")
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


def test_star_head_normalises_over_the_image_then_rounds(tmp_path):
    torch.manual_seed(0)
    m = create_model("v3_star", dims=(16, 32, 64, 128), depths=(1, 1, 1, 1)).eval()
    st = _stack(5, 3, 64, 64)
    res = fuse_stack_v3(st, m, gather="hard", precision="fp32", reject_outliers=False, half_res=False)
    lum = np.stack([luma(x) for x in st])
    lg = predict_logits(m, lum)
    e = (lg.softmax(0) * torch.arange(1.0, 6.0)[:, None, None]).sum(0)  # upstream: E[k] over k = 1..N
    d = (e - e.min()) / (e.max() - e.min())  # min-max over the whole image
    expect = torch.round(d * 4).to(torch.int32).numpy()
    assert (res.index_map == expect).mean() > 0.999  # float rounding at .5 boundaries only
    assert res.index_map.min() == 0 and res.index_map.max() == 4  # the range always spans every layer
    # the depth map is an output too (an untrained net's E[k] spans ~1e-5: the min-max stretches float rounding)
    assert np.abs(res.extras["depth"] - d.numpy()).mean() < 1e-3
    # tiled: still one normalisation over the whole image
    tiled = fuse_stack_v3(st, m, gather="hard", precision="fp32", reject_outliers=False, tile=32, overlap=8)
    assert tiled.index_map.min() == 0 and tiled.index_map.max() == 4
    sel = np.take_along_axis(st, res.index_map[None, None].astype(np.int64), 0)[0]
    np.testing.assert_array_equal(res.image, sel)  # hard gather of the source colour


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
        # the network's own choice: with white noise as the only texture, the sharp layer IS a noisy-frame outlier
        # next to two smooth ones (the documented limit of noise_outliers), so rejection is off here
        res = fm(stack, device="cpu", reject_outliers=False, gather="hard")
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
    res = fuse_stack_v3(bad, small_model, gather="hard")
    assert res.extras["rejected_layers"] == [2]
    assert not (res.index_map == 2).any()
    h, w = res.index_map.shape
    assert np.array_equal(res.image, bad[res.index_map, :, np.arange(h)[:, None], np.arange(w)].transpose(2, 0, 1))
    kept = fuse_stack_v3(np.delete(bad, 2, axis=0), small_model, gather="hard")  # same as fusing without that layer
    np.testing.assert_array_equal(res.image, kept.image)
    assert fuse_stack_v3(bad, small_model, reject_outliers=False).extras["rejected_layers"] == []


@pytest.mark.parametrize(("h", "w"), [(40, 70), (33, 97)])
def test_half_res_logits_are_chunk_independent_and_full_size(small_model, h, w):
    lum = _stack(3, 1, h, w, seed=4)[:, 0]
    whole = predict_logits(small_model, lum, half_res=True, chunk_pixels=10**7)
    chunked = predict_logits(small_model, lum, half_res=True, chunk_pixels=300)  # many row chunks
    assert whole.shape == (3, h, w)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


def test_half_res_agrees_with_the_full_network_with_the_shipped_weights():
    from stackmff.models.inference import DEFAULT_WEIGHTS, load_model

    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    m = load_model(DEFAULT_WEIGHTS)
    st = _scene_stack(n=5, seed=7)
    full = fuse_stack_v3(st, m, precision="fp32", half_res=False)
    half = fuse_stack_v3(st, m, precision="fp32")
    assert half.extras["half_res"] and not full.extras["half_res"]
    assert (half.index_map == full.index_map).mean() > 0.9
    assert np.abs(half.image - full.image).mean() < 0.01


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
    res = fuse_stack_v3(st, small_model, gather="soft", precision="fp32", half_res=False)
    p = predict_logits(small_model, np.stack([luma(x) for x in st])).softmax(0).numpy()  # (N, H, W)
    np.testing.assert_allclose(res.image, (p[:, None] * st).sum(0), atol=1e-5)
    hard = fuse_stack_v3(st, small_model, precision="fp32", gather="hard", half_res=False)
    np.testing.assert_array_equal(res.index_map, hard.index_map)  # same decision, different colour rule
    assert not np.array_equal(res.image, hard.image)
    with pytest.raises(StackMFFError, match="gather"):
        fuse_stack_v3(st, small_model, gather="mean")


@pytest.mark.parametrize(
    "scene",
    [
        "petteri_focus_stack/pcb",
        "cmcguinness_ring/ring",
        "josephlewis_leaves/leaf",
        "antoinewdg_multifocus/bug",
        "mobile_depth_suwajanakorn/keyboard",
    ],
)
def test_real_stacks_lose_no_layer_to_outlier_rejection_but_bad_copies_are_caught(shared_data, scene):
    from stackmff.io import load_stack
    from stackmff.models.inference import outlier_layers, photometric_outliers

    st = load_stack(shared_data / scene).images
    assert not outlier_layers(st).any()
    shifted = np.clip(st[len(st) // 2] * 0.45 + 0.05, 0, 1)[None]  # the same frame, ~1.2 stops darker
    assert photometric_outliers(np.concatenate([st, shifted])).nonzero()[0].tolist() == [len(st)]
    rng = np.random.default_rng(0)
    noisy = np.clip(st[0] + 0.1 * rng.standard_normal(st[0].shape, dtype=np.float32), 0, 1)[
        None
    ]  # ISO way up (std 0.1)
    assert outlier_layers(np.concatenate([noisy, st])).nonzero()[0].tolist() == [0]


def test_noise_outliers_flag_a_much_noisier_layer_but_not_a_uniformly_noisy_stack():
    from stackmff.models.inference import noise_outliers, outlier_layers

    st = _scene_stack()
    rng = np.random.default_rng(2)
    noisy = np.clip(st[2] + 0.1 * rng.standard_normal(st[2].shape), 0, 1).astype(np.float32)
    assert not noise_outliers(st).any()
    np.testing.assert_array_equal(noise_outliers(np.concatenate([st, noisy[None]])), [False] * 5 + [True])
    high_iso = np.clip(st + 0.05 * rng.standard_normal(st.shape), 0, 1).astype(np.float32)  # all layers equally noisy
    assert not noise_outliers(high_iso).any()
    assert not noise_outliers(np.stack([st[0], noisy])).any()  # two layers: keep both
    bad = np.concatenate([st, np.clip(st[1:2] * 2.2, 0, 1), noisy[None]])
    np.testing.assert_array_equal(outlier_layers(bad), [False] * 5 + [True, True])
    # a sharp layer whose fine grating fills the frame, next to smooth ones, is detail, not noise
    yy, xx = np.mgrid[0:96, 0:128].astype(np.float32)
    sharp = np.clip(st[4] + 0.15 * np.sin(2 * np.pi * (xx + yy) / 3.0), 0, 1).astype(np.float32)
    sharp += np.float32(0.004) * rng.standard_normal(sharp.shape).astype(np.float32)
    assert not noise_outliers(np.concatenate([sharp[None], st[1:]])).any()


def _pyramid_reference(st, logits, alpha=0.5, beta=4.0, window=5, top_k=None):
    # direct (non-streaming) form of the documented rule: softmax over layers of alpha*log G(p) + beta*log S;
    # top_k (default None = all layers): p = 0 outside each pixel's top_k layers; a layer whose reduced p is exactly 0: no weight
    import cv2

    from stackmff.fusion._common import auto_levels
    from stackmff.fusion.laplacian_pyramid import build_laplacian_pyramid, collapse_laplacian_pyramid

    _n, _c, h, w = st.shape
    lev = auto_levels(h, w)
    p = torch.from_numpy(logits.astype(np.float32)).softmax(0).numpy()
    if top_k is not None:
        p[logits.astype(np.float32) < np.sort(logits.astype(np.float32), axis=0)[-top_k]] = 0.0
    pyrs = [build_laplacian_pyramid(np.ascontiguousarray(x.transpose(1, 2, 0)), lev) for x in st]
    fused = []
    g = list(p)
    for li in range(lev):
        bands = np.stack([pyr[li] for pyr in pyrs])  # (N, h, w, C)
        y = (bands * np.float32([0.299, 0.587, 0.114])).sum(-1)
        sal = np.stack([uniform_filter(v * v, window, mode="mirror") for v in y])
        score = alpha * np.log(np.stack(g) + 1e-6) + beta * np.log(sal + 1e-10)
        if top_k is not None:
            score[np.stack(g) <= 0] = -np.inf
        wgt = torch.from_numpy(score).softmax(0).numpy()
        fused.append((wgt[..., None] * bands).sum(0))
        g = [cv2.pyrDown(x, borderType=cv2.BORDER_REFLECT_101) for x in g]
    fused.append(np.mean([pyr[lev] for pyr in pyrs], axis=0))
    return np.clip(collapse_laplacian_pyramid(fused), 0, 1).transpose(2, 0, 1)


def test_pyramid_blend_equals_the_direct_softmax_and_ignores_layer_order():
    from stackmff.models.inference import pyramid_blend

    st = _scene_stack(n=5, h=70, w=90, seed=3)
    logits = np.random.default_rng(0).normal(0, 3, (5, 70, 90)).astype(np.float32)
    out = pyramid_blend(st, logits)
    assert out.shape == (3, 70, 90) and out.dtype == np.float32
    np.testing.assert_allclose(out, _pyramid_reference(st, logits), atol=2e-5)
    perm = [3, 0, 4, 2, 1]
    np.testing.assert_allclose(pyramid_blend(st[perm], logits[perm]), out, atol=1e-5)
    gray = pyramid_blend(st[:, :1], logits)
    assert gray.shape == (1, 70, 90)
    np.testing.assert_allclose(gray, _pyramid_reference(st[:, :1].repeat(3, 1), logits)[:1], atol=2e-5)
    with pytest.raises(StackMFFError, match="logits must have shape"):
        pyramid_blend(st, logits[:4])
    for k in (None, 1, 2, 3):  # None: every layer takes part
        top = pyramid_blend(st, logits, top_k=k)
        np.testing.assert_allclose(top, _pyramid_reference(st, logits, top_k=k), atol=2e-5)
        np.testing.assert_allclose(pyramid_blend(st[perm], logits[perm], top_k=k), top, atol=1e-5)
    np.testing.assert_array_equal(pyramid_blend(st, logits, top_k=5), pyramid_blend(st, logits, top_k=None))
    with pytest.raises(StackMFFError, match="top_k must be >= 1"):
        pyramid_blend(st, logits, top_k=0)


def test_pyramid_blend_top_k_gives_a_sharp_layer_the_network_rules_out_zero_weight():
    from stackmff.models.inference import pyramid_blend

    st = _scene_stack(n=6, h=64, w=96, seed=4)
    yy, xx = np.mgrid[0:64, 0:96].astype(np.float32)
    grating = np.float32(0.2) * np.sin(2 * np.pi * (xx + yy) / 3.0)  # fine, zero-mean: nothing in the base level
    far = st.copy()
    far[5] = np.clip(st[4] + grating, 0, 1)  # very sharp detail in a layer the network gives p ~ 1e-5 everywhere
    logits = np.random.default_rng(3).normal(0, 1, (6, 64, 96)).astype(np.float32)
    logits[5] = -12.0
    # without top_k its salience outweighs the 1e-6-floored prior (the documented limit): the grating leaks in
    leak = np.abs(pyramid_blend(far, logits, top_k=None) - pyramid_blend(st, logits, top_k=None)).max()
    assert leak > 0.05
    # kept out of the top 3 everywhere: zero weight at every detail level, the result only differs through the
    # coarsest level (the mean of the layers, where the grating is ~0)
    diff = np.abs(pyramid_blend(far, logits, top_k=3) - pyramid_blend(st, logits, top_k=3)).max()
    assert diff < 2e-3


@pytest.mark.parametrize(("h", "w", "c"), [(70, 90, 3), (67, 45, 3), (101, 64, 1), (9, 40, 3)])
def test_pyramid_blend_in_strips_equals_the_whole_image(h, w, c):
    from stackmff.models.inference import pyramid_blend

    st = _scene_stack(n=4, h=h, w=w, seed=2)[:, :c]
    logits = np.random.default_rng(1).normal(0, 2, (4, h, w)).astype(np.float16)
    for k in (None, 2):
        whole = pyramid_blend(st, logits, strip_rows=4096, top_k=k)
        for rows in (2, 6, 32):  # many strips, odd heights, strips shorter than the margins
            np.testing.assert_allclose(pyramid_blend(st, logits, strip_rows=rows, top_k=k), whole, atol=1e-6)


def test_pyramid_blend_follows_a_confident_network_between_equally_sharp_layers():
    from stackmff.models.inference import pyramid_blend

    a, b = _scene_stack(n=1, h=64, w=96, seed=5)[0], _scene_stack(n=1, h=64, w=96, seed=6)[0]  # two sharp scenes
    st = np.stack([a, b])
    lg = np.zeros((2, 64, 96), np.float32)
    lg[0, :, :48], lg[1, :, 48:] = 8.0, 8.0  # the network: left half from layer 0, right half from layer 1
    out = pyramid_blend(st, lg)
    # away from the seam each half is rebuilt from its layer (measured 0.04 mean error, from the mean base level)
    # and not from the other one (0.18; the two scenes differ by 0.21)
    err = lambda x, cols: np.abs(out - x)[:, 8:-8, cols].mean()  # noqa: E731
    assert err(a, slice(4, 36)) < 0.3 * err(b, slice(4, 36))
    assert err(b, slice(60, 92)) < 0.3 * err(a, slice(60, 92))


def test_pyramid_gather_drops_a_noisy_layer_the_blend_alone_would_let_through(small_model):
    st = _scene_stack(n=4, h=64, w=96, seed=5)
    noisy = np.clip(st[1] + 0.2 * np.random.default_rng(0).standard_normal(st[1].shape), 0, 1).astype(np.float32)
    bad = np.concatenate([st, noisy[None]])
    res = fuse_stack_v3(bad, small_model, gather="pyramid", precision="fp32")
    assert res.extras["rejected_layers"] == [4]
    np.testing.assert_allclose(res.image, fuse_stack_v3(st, small_model, gather="pyramid", precision="fp32").image)
    kept = fuse_stack_v3(bad, small_model, gather="pyramid", precision="fp32", reject_outliers=False)
    assert np.abs(kept.image - res.image).mean() > 0.02  # the documented limit: salience lets the noise in


def test_fuse_pyramid_gather_keeps_the_decision_and_rejects_regression_heads(small_model):
    st = _scene_stack(n=4, h=50, w=70, seed=1)
    hard = fuse_stack_v3(st, small_model, precision="fp32", gather="hard")
    pyr = fuse_stack_v3(st, small_model, precision="fp32", gather="pyramid")
    np.testing.assert_array_equal(pyr.index_map, hard.index_map)
    assert pyr.image.shape == hard.image.shape and pyr.extras["gather"] == "pyramid"
    lg = predict_logits(small_model, np.stack([luma(x) for x in st]), half_res=True).numpy()
    from stackmff.models.inference import pyramid_blend

    np.testing.assert_allclose(pyr.image, pyramid_blend(st, lg.astype(np.float16)), atol=1e-5)
    star = create_model("v3_small", head="regress").eval()
    with pytest.raises(StackMFFError, match="classification head"):
        fuse_stack_v3(st, star, gather="pyramid")


def test_top_k_method_option_reaches_the_pyramid_blend_and_is_checked():
    from stackmff.fusion import get_fusion_method

    fm = get_fusion_method("stackmff_v3")
    with pytest.raises(StackMFFError, match="top_k must be >= 1"):
        fm.check_options({"top_k": 0})
    st = _scene_stack(n=6, h=64, w=64, seed=5)
    default = fm(st, device="cpu").image
    np.testing.assert_array_equal(fm(st, device="cpu", top_k=6).image, default)  # all 6 layers: the default rule
    assert np.abs(fm(st, device="cpu", top_k=1).image - default).max() > 1e-3  # one layer per pixel: another image
