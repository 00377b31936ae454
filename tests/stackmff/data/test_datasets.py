"""Tests for the training datasets and the equal-N batch sampler."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from stackmff.data.datasets import EqualNBatchSampler, FolderStacks, ProceduralStacks, collate_stacks
from stackmff.errors import StackMFFError


def _gather(sample) -> torch.Tensor:
    idx = sample["index"][None, None].expand(1, 3, *sample["index"].shape)
    return torch.gather(sample["layers"], 0, idx)[0]


@pytest.mark.parametrize("mode", ["physical", "upstream"])
def test_procedural_sample_contract(mode):
    ds = ProceduralStacks(6, size=(40, 48), n_range=(3, 6), mode=mode, invalid_prob=1.0, seed=1)
    for i in range(len(ds)):
        s = ds[i]
        n = ds.n_layers(i)
        assert s["layers"].shape == (n, 3, 40, 48) and s["layers"].dtype == torch.float32
        assert s["index"].shape == (40, 48) and s["index"].dtype == torch.int64
        assert s["aif"].shape == (3, 40, 48)
        assert 3 <= n <= 6 and s["valid"].sum() >= 2
        assert s["valid"][s["index"]].all()  # invalid layers are never targets
        if n > 2:
            assert (~s["valid"]).sum() >= 1  # invalid_prob=1 gives at least one invalid layer when room
        if mode == "upstream":
            torch.testing.assert_close(_gather(s), s["aif"], rtol=0, atol=0)


def test_procedural_reproducible_and_epochs_differ():
    a = ProceduralStacks(4, size=32, n_range=(4, 4), seed=3)
    b = ProceduralStacks(4, size=32, n_range=(4, 4), seed=3)
    torch.testing.assert_close(a[2]["layers"], b[2]["layers"])
    e0 = a[2]["layers"]
    a.set_epoch(1)
    e1 = a[2]["layers"]
    assert not torch.equal(e0, e1)
    torch.testing.assert_close(a[2]["layers"], b[len(b) + 2]["layers"])  # epoch-encoded index == set_epoch
    assert not torch.equal(a[2]["layers"], ProceduralStacks(4, size=32, n_range=(4, 4), seed=4)[len(b) + 2]["layers"])


def test_procedural_layers_are_reshuffled():
    ds = ProceduralStacks(8, size=32, n_range=(6, 6), invalid_prob=0.0, seed=0)
    orders = [tuple(np.argsort(ds.draw(i).focus)) for i in range(8)]
    assert len(set(orders)) > 1
    ordered = ProceduralStacks(8, size=32, n_range=(6, 6), invalid_prob=0.0, shuffle=False, seed=0)
    assert all(np.all(np.diff(ordered.draw(i).focus) > 0) for i in range(4))


def test_procedural_rejects_bad_options():
    with pytest.raises(StackMFFError, match="mode"):
        ProceduralStacks(4, mode="magic")
    with pytest.raises(StackMFFError, match="n_range"):
        ProceduralStacks(4, n_range=(1, 4))
    with pytest.raises(StackMFFError, match="size"):
        ProceduralStacks(4, size=(4, 4))


def test_equal_n_batches_through_dataloader():
    ds = ProceduralStacks(20, size=24, n_range=(2, 4), seed=0)
    sampler = EqualNBatchSampler(ds, 3, seed=0)
    seen = []
    for b in DataLoader(ds, batch_sampler=sampler, collate_fn=collate_stacks):
        bsz, n = b["layers"].shape[:2]
        assert b["layers"].shape == (bsz, n, 3, 24, 24) and b["index"].shape == (bsz, 24, 24)
        assert b["valid"].shape == (bsz, n) and bsz <= 3
        seen.append(bsz)
    assert sum(seen) == 20 and len(seen) == len(sampler)
    # epochs: same grouping, new order, epoch-encoded indices
    sampler.set_epoch(1)
    first = next(iter(sampler))
    assert all(i >= 20 for i in first) and len({ds.n_layers(i) for i in first}) == 1


def test_collate_refuses_mixed_n():
    ds = ProceduralStacks(10, size=16, n_range=(2, 6), seed=0)
    ns = {ds.n_layers(i): i for i in range(10)}
    assert len(ns) > 1
    a, b = list(ns.values())[:2]
    with pytest.raises(StackMFFError, match="EqualNBatchSampler"):
        collate_stacks([ds[a], ds[b]])


def _write_upstream_tree(root, n_scenes=3, n_layers=4, h=40, w=50):
    rng = np.random.default_rng(0)
    base = root / "Toy" / "TR"
    for s in range(n_scenes):
        name = f"s{s}"
        (base / "focus_stack" / name).mkdir(parents=True)
        (base / "focus_index_gt").mkdir(parents=True, exist_ok=True)
        (base / "AiF").mkdir(parents=True, exist_ok=True)
        # layer i is a flat colour i * 60, written as PNG so the test can check exact values
        for i in range(n_layers):
            cv2.imwrite(str(base / "focus_stack" / name / f"{i}.png"), np.full((h, w, 3), 60 * i, np.uint8))
        gt = rng.integers(0, n_layers, (h, w)).astype(np.int64)
        np.save(base / "focus_index_gt" / f"{name}.npy", gt)
        aif = np.repeat((60 * gt).astype(np.uint8)[..., None], 3, 2)
        cv2.imwrite(str(base / "AiF" / f"{name}.png"), aif)
    return root


def test_folder_stacks_crops_flips_shuffles(tmp_path):
    root = _write_upstream_tree(tmp_path)
    ds = FolderStacks(root, size=(32, 32), invalid_prob=1.0, max_invalid=2, seed=0)
    assert len(ds) == 3
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(3):
            s = ds[i]
            assert s["layers"].shape == (ds.n_layers(i), 3, 32, 32)
            assert s["valid"][s["index"]].all()
            # the GT-picked pixels equal the AiF crop exactly (crop/flip/shuffle applied consistently)
            torch.testing.assert_close(_gather(s), s["aif"], rtol=0, atol=0)
    # crops vary between draws (random offsets, not a resize)
    ds2 = FolderStacks(root, size=(32, 32), invalid_prob=0.0, flips=False, shuffle=False, seed=0)
    crops = {ds2[i + 3 * e]["index"].numpy().tobytes() for e in range(6) for i in range(1)}
    assert len(crops) > 1
    gt = np.load(tmp_path / "Toy" / "TR" / "focus_index_gt" / "s0.npy")
    idx = ds2[0]["index"].numpy()
    found = any(np.array_equal(gt[y : y + 32, x : x + 32], idx) for y in range(9) for x in range(19))
    assert found


def test_folder_stacks_pads_small_images(tmp_path):
    root = _write_upstream_tree(tmp_path, n_scenes=1, h=20, w=24)
    s = FolderStacks(root, size=(32, 32), invalid_prob=0.0, seed=0)[0]
    assert s["layers"].shape == (4, 3, 32, 32)
    torch.testing.assert_close(_gather(s), s["aif"], rtol=0, atol=0)


def test_folder_stacks_read_layers_through_load_image(tmp_path):
    # 16-bit layers keep their precision, grey layers become RGB; no AiF file: the AiF is gathered from the GT
    base = tmp_path / "Toy" / "TR"
    (base / "focus_stack" / "s0").mkdir(parents=True)
    (base / "focus_index_gt").mkdir()
    deep = np.full((16, 20, 3), 1000, np.uint16)
    deep[..., 0] = 40000  # red channel (written as BGR)
    cv2.imwrite(str(base / "focus_stack" / "s0" / "0.png"), deep)
    cv2.imwrite(str(base / "focus_stack" / "s0" / "1.png"), np.full((16, 20), 77, np.uint8))
    gt = np.zeros((16, 20), np.int64)
    gt[:, 10:] = 1
    np.save(base / "focus_index_gt" / "s0.npy", gt)
    s = FolderStacks(tmp_path, size=None, invalid_prob=0.0, flips=False, shuffle=False).draw(0)
    assert s.layers.shape == (2, 3, 16, 20) and s.layers.dtype == np.float32
    np.testing.assert_array_equal(s.layers[0, :, 0, 0], np.float32([1000, 1000, 40000]) / np.float32(65535))
    np.testing.assert_array_equal(s.layers[1], np.float32(77) / np.float32(255))
    np.testing.assert_array_equal(s.aif[:, :, :10], s.layers[0][:, :, :10])
    np.testing.assert_array_equal(s.aif[:, :, 10:], s.layers[1][:, :, 10:])


def test_folder_stacks_errors(tmp_path):
    with pytest.raises(StackMFFError, match="not found"):
        FolderStacks(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StackMFFError, match="no stacks found"):
        FolderStacks(tmp_path / "empty")
