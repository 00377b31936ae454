"""The memory budget of StackMFF V3 when none is given: from the image size and the free memory."""

from __future__ import annotations

import numpy as np
import pytest

from stackmff.fusion.learned import fuse_stack_v3
from stackmff.models.registry import create_model, get_config
from stackmff.models.tiling import auto_memory_budget, plan_tiles

CFG = get_config("v3")


def test_small_stacks_get_the_whole_cap_and_stay_untiled():
    b = auto_memory_budget(10, 864, 1152, CFG, available_mb=16000)
    assert b == 1024
    assert not plan_tiles(864, 1152, 10, CFG, memory_budget_mb=b).tiled


def test_tiled_images_get_the_smaller_budget():
    b = auto_memory_budget(10, 3000, 4000, CFG, available_mb=16000)
    assert b == 256
    plan = plan_tiles(3000, 4000, 10, CFG, memory_budget_mb=b)
    assert plan.tiled and plan.tile >= 384  # still tiles large enough to keep the overlap share moderate


@pytest.mark.parametrize(("avail", "expected"), [(1000, 256), (2560, 320), (100_000, 1024)])
def test_budget_follows_free_memory_within_bounds(avail, expected):
    # a 2-layer 256² stack fits untiled in any budget: the budget is the cap, 1/8 of the free memory in [256, 1024]
    assert auto_memory_budget(2, 256, 256, CFG, available_mb=avail) == expected


def test_fusion_records_the_budget_it_chose():
    model = create_model("v3_small").eval()
    stack = np.random.default_rng(0).random((3, 3, 64, 64), dtype=np.float32)
    auto = fuse_stack_v3(stack, model)
    assert 256 <= auto.extras["memory_budget_mb"] <= 1024
    fixed = fuse_stack_v3(stack, model, memory_budget_mb=300)
    assert fixed.extras["memory_budget_mb"] == 300
    np.testing.assert_array_equal(auto.index_map, fixed.index_map)  # untiled either way: the same result


@pytest.mark.parametrize("name", ["v3_small", "v3"])
def test_many_layers_of_a_wide_image_keep_tiles_of_at_least_256_px(name):
    # 50 x 24 MP: 256 MB left 64-px tiles (whole-width band buffers of every layer); the budget grows towards the cap
    cfg = get_config(name)
    b = auto_memory_budget(50, 4240, 5656, cfg, available_mb=22000)
    assert 256 < b <= 1024
    assert plan_tiles(4240, 5656, 50, cfg, memory_budget_mb=b).tile >= 256
    assert plan_tiles(4240, 5656, 50, cfg, memory_budget_mb=256).tile < 128  # what it was
    # never above the cap (1/8 of the free memory): a smaller tile then
    assert auto_memory_budget(50, 4240, 5656, cfg, available_mb=4000) == 500
    # 10 x 12 MP keeps the smaller budget and its tile
    assert auto_memory_budget(10, 3000, 4000, cfg, available_mb=22000) == 256
