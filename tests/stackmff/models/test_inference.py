"""Streamed, tiled inference: streaming == whole forward, feathered tiles, the decision, the tile plan."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import uniform_filter

from stackmff.models.inference import LayerDecision, _pad_reflect, predict_logits
from stackmff.models.registry import create_model, get_config
from stackmff.models.tiling import TilePlan, blend_tiles, plan_tiles


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


def _decide(st, fn, plan):
    d = LayerDecision(st, fn, plan)
    rows = [band.rows for band in d]  # runs the tiles
    return d, rows


def test_tiled_blending_of_a_local_function_agrees_away_from_tile_borders():
    # a 3x3 box filter differs from the whole-image result only on the 1-px tile borders, which feathering weighs
    # down; the blended decision must agree almost everywhere
    st = _stack(4, 3, 90, 110, seed=3)

    def fn(lum):
        return np.stack([uniform_filter(x, 3, mode="reflect") for x in lum]) * 20

    whole, _ = _decide(st, fn, TilePlan(128, 0, 4, 4096, False))
    tiled, rows = _decide(st, fn, TilePlan(32, 8, 4, 4096, True))
    assert (whole.index == tiled.index).mean() > 0.97
    assert len(rows) > 1 and np.array_equal(np.concatenate([np.arange(90)[r] for r in rows]), np.arange(90))


def test_tiled_blending_of_pointwise_logits_is_exact():
    st = _stack(3, 3, 70, 100, seed=4)

    def fn(lum):
        return -np.abs(lum - 0.5) * 10

    whole, _ = _decide(st, fn, TilePlan(128, 0, 3, 4096, False))
    tiled, _ = _decide(st, fn, TilePlan(32, 12, 3, 4096, True))
    np.testing.assert_array_equal(whole.index, tiled.index)
    np.testing.assert_allclose(whole.confidence, tiled.confidence, atol=5e-4)  # kept in float16
    np.testing.assert_allclose(
        np.concatenate([lg for _, lg in blend_tiles(st, fn, TilePlan(32, 12, 3, 4096, True))], axis=1),
        np.concatenate([lg for _, lg in blend_tiles(st, fn, TilePlan(128, 0, 3, 4096, False))], axis=1),
        atol=1e-5,
    )


def test_decision_bands_carry_the_probabilities_of_their_rows():
    st = _stack(3, 3, 70, 100, seed=4)

    def fn(lum):
        return -np.abs(lum - 0.5) * 10

    d = LayerDecision(st, fn, TilePlan(32, 12, 3, 4096, True))
    for band in d:
        assert band.logits.shape == band.probs.shape == (3, band.rows.stop - band.rows.start, 100)
        np.testing.assert_allclose(band.probs.sum(0), 1.0, atol=1e-6)
        np.testing.assert_array_equal(band.probs.argmax(0), d.index[band.rows])
        np.testing.assert_allclose(d.confidence[band.rows], band.probs.max(0), atol=5e-4)  # float16
    assert d.depth is None and d.index.dtype == np.uint8


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


@pytest.mark.parametrize(("h", "w"), [(40, 70), (33, 97)])
def test_half_res_logits_are_chunk_independent_and_full_size(small_model, h, w):
    lum = _stack(3, 1, h, w, seed=4)[:, 0]
    whole = predict_logits(small_model, lum, half_res=True, chunk_pixels=10**7)
    chunked = predict_logits(small_model, lum, half_res=True, chunk_pixels=300)  # many row chunks
    assert whole.shape == (3, h, w)
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n", [2, 7, 300])
def test_first_argmax_is_torchs_argmax_with_ties_to_the_first_layer(n):
    from stackmff.models.inference import _first_argmax

    g = torch.Generator().manual_seed(n)
    x = torch.randint(0, 4, (n, 33, 17), generator=g).float()  # few values: many ties
    x[:, 0, 0] = 1.0  # all tied: layer 0
    got = _first_argmax(x, x.amax(0))
    assert got.dtype == (torch.uint8 if n <= 256 else torch.int16)
    np.testing.assert_array_equal(got.long().numpy(), x.argmax(0).numpy())
    assert got[0, 0] == 0
