"""StackMFF V3 fusion: exact gathers, tiles, outlier rejection, the gathers' colour rules, the registered methods."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _helpers import scene_stack

from stackmff.color import luma
from stackmff.errors import StackMFFError
from stackmff.fusion.learned import fuse_stack_v3
from stackmff.fusion.pyramid_blend import pyramid_blend
from stackmff.fusion.registry import get_fusion_method
from stackmff.models.checkpoint import DEFAULT_WEIGHTS, load_model, save_checkpoint
from stackmff.models.inference import predict_logits
from stackmff.models.registry import create_model


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # as tests/stackmff/models/conftest.py: on a loaded 2-core machine, two threads spin-wait and run 10-50x slower
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("v3_small").eval()


def _stack(n=4, c=3, h=50, w=70, seed=0):
    return np.random.default_rng(seed).random((n, c, h, w), dtype=np.float32)


@pytest.mark.parametrize(("n", "c", "h", "w"), [(2, 3, 33, 47), (6, 1, 64, 64), (3, 3, 5, 90)])
def test_gather_returns_exact_source_values(small_model, n, c, h, w):
    st = (np.random.default_rng(n).integers(0, 65536, (n, c, h, w)) / 65535.0).astype(np.float32)  # 16-bit values
    res = fuse_stack_v3(st, small_model, gather="hard")
    assert res.image.shape == (c, h, w) and res.index_map.shape == (h, w) and res.confidence.shape == (h, w)
    assert res.index_map.min() >= 0 and res.index_map.max() < n
    expect = np.take_along_axis(st, res.index_map[None, None].astype(np.int64).repeat(c, 1), 0)[0]
    assert np.array_equal(res.image, expect)
    assert np.all((res.confidence >= 1.0 / n - 5e-4) & (res.confidence <= 1.0 + 5e-4))  # float16 while tiling


def test_tiled_network_close_to_untiled(small_model):
    st = _stack(4, 3, 96, 128, seed=5)
    whole = fuse_stack_v3(st, small_model)
    tiled = fuse_stack_v3(st, small_model, tile=64, overlap=16)
    assert not whole.extras["tiled"] and tiled.extras["tiled"]
    assert (whole.index_map == tiled.index_map).mean() > 0.9
    assert np.abs(whole.confidence - tiled.confidence).mean() < 0.05
    hard = fuse_stack_v3(st, small_model, tile=32, overlap=8, gather="hard")  # the gather stays exact across tiles
    expect = np.take_along_axis(st, hard.index_map[None, None].astype(np.int64).repeat(3, 1), 0)[0]
    np.testing.assert_array_equal(hard.image, expect)


def test_between_tiles_runs_before_every_tile_and_changes_nothing(small_model):
    st = _stack(4, 3, 96, 128, seed=5)
    calls = []
    plain = fuse_stack_v3(st, small_model, tile=64, overlap=16)
    hooked = fuse_stack_v3(st, small_model, tile=64, overlap=16, between_tiles=lambda: calls.append(1))
    assert len(calls) == 2 * 3  # tiles of 64 px with 16 px overlap: 2 rows x 3 columns on 96 x 128
    np.testing.assert_array_equal(hooked.image, plain.image)


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


def test_rejected_layers_are_never_picked_and_indices_refer_to_the_input(small_model):
    st = scene_stack()
    bad = np.concatenate([st[:2], np.clip(st[:1] * 2.2, 0, 1), st[2:]])  # exposure-shifted copy at position 2
    res = fuse_stack_v3(bad, small_model, gather="hard")
    assert res.extras["rejected_layers"] == [2]
    assert not (res.index_map == 2).any()
    h, w = res.index_map.shape
    assert np.array_equal(res.image, bad[res.index_map, :, np.arange(h)[:, None], np.arange(w)].transpose(2, 0, 1))
    kept = fuse_stack_v3(np.delete(bad, 2, axis=0), small_model, gather="hard")  # same as fusing without that layer
    np.testing.assert_array_equal(res.image, kept.image)
    assert fuse_stack_v3(bad, small_model, reject_outliers=False).extras["rejected_layers"] == []


def test_half_res_agrees_with_the_full_network_with_the_shipped_weights():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    m = load_model(DEFAULT_WEIGHTS)
    st = scene_stack(n=5, seed=7)
    full = fuse_stack_v3(st, m, precision="fp32", half_res=False)
    half = fuse_stack_v3(st, m, precision="fp32")
    assert half.extras["half_res"] and not full.extras["half_res"]
    assert (half.index_map == full.index_map).mean() > 0.9
    assert np.abs(half.image - full.image).mean() < 0.01


def test_bf16_and_fp32_pick_the_same_layers_with_the_shipped_weights():
    if not DEFAULT_WEIGHTS.is_file():
        pytest.skip("no shipped weights")
    m = load_model(DEFAULT_WEIGHTS)
    st = scene_stack(n=4, seed=3)
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


def test_pyramid_gather_drops_a_noisy_layer_the_blend_alone_would_let_through(small_model):
    st = scene_stack(n=4, h=64, w=96, seed=5)
    noisy = np.clip(st[1] + 0.2 * np.random.default_rng(0).standard_normal(st[1].shape), 0, 1).astype(np.float32)
    bad = np.concatenate([st, noisy[None]])
    res = fuse_stack_v3(bad, small_model, gather="pyramid", precision="fp32")
    assert res.extras["rejected_layers"] == [4]
    np.testing.assert_allclose(res.image, fuse_stack_v3(st, small_model, gather="pyramid", precision="fp32").image)
    kept = fuse_stack_v3(bad, small_model, gather="pyramid", precision="fp32", reject_outliers=False)
    assert np.abs(kept.image - res.image).mean() > 0.02  # the documented limit: salience lets the noise in


def test_fuse_pyramid_gather_keeps_the_decision_and_rejects_regression_heads(small_model):
    st = scene_stack(n=4, h=50, w=70, seed=1)
    hard = fuse_stack_v3(st, small_model, precision="fp32", gather="hard")
    pyr = fuse_stack_v3(st, small_model, precision="fp32", gather="pyramid")
    np.testing.assert_array_equal(pyr.index_map, hard.index_map)
    assert pyr.image.shape == hard.image.shape and pyr.extras["gather"] == "pyramid"
    lg = predict_logits(small_model, np.stack([luma(x) for x in st]), half_res=True).numpy()
    np.testing.assert_allclose(pyr.image, pyramid_blend(st, lg.astype(np.float16)), atol=1e-5)
    star = create_model("v3_small", head="regress").eval()
    with pytest.raises(StackMFFError, match="classification head"):
        fuse_stack_v3(st, star, gather="pyramid")


def test_top_k_method_option_reaches_the_pyramid_blend_and_is_checked():
    fm = get_fusion_method("stackmff_v3")
    with pytest.raises(StackMFFError, match="top_k must be >= 1"):
        fm.check_options({"top_k": 0})
    st = scene_stack(n=6, h=64, w=64, seed=5)
    default = fm(st, device="cpu").image
    np.testing.assert_array_equal(fm(st, device="cpu", top_k=6).image, default)  # all 6 layers: the default rule
    assert np.abs(fm(st, device="cpu", top_k=1).image - default).max() > 1e-3  # one layer per pixel: another image


def test_registry_folds_the_checkpoint_once_per_process_and_fuses_the_same(tmp_path, small_model, monkeypatch):
    from stackmff.models import inference, stackmff_v3

    path = save_checkpoint(tmp_path / "m.pt", small_model)
    stack = scene_stack(n=3, h=64, w=64)
    expected = fuse_stack_v3(stack, small_model, half_res=False).image  # the model as trained, folded now
    folds = []
    fold = stackmff_v3.fold_batchnorm
    monkeypatch.setattr(inference, "fold_batchnorm", lambda m, **kw: folds.append(kw) or fold(m, **kw))
    fm = get_fusion_method("stackmff_v3")
    first = fm(stack, weights=path, device="cpu", half_res=False).image
    second = fm(stack, weights=path, device="cpu", half_res=False).image
    assert folds == [{"inplace": True}]  # folded once, when loaded, with no deep copy; not for every stack
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected, atol=1e-5)
