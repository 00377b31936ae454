"""Outlier layers: exposure-shifted, blank and much noisier frames are caught, valid layers (defocus) never."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import scene_stack

from stackmff.fusion.outliers import noise_outliers, outlier_layers, photometric_outliers


def test_photometric_outliers_flags_exposure_and_blank_layers_only():
    st = scene_stack()
    assert not photometric_outliers(st).any()  # defocus alone never rejects a layer
    noisy = np.clip(st[2] + 0.1 * np.random.default_rng(1).standard_normal(st[2].shape), 0, 1).astype(np.float32)
    bad = np.concatenate([st, np.clip(st[1:2] * 2.2, 0, 1), np.full_like(st[:1], 0.9), noisy[None]])
    np.testing.assert_array_equal(photometric_outliers(bad), [False] * 5 + [True, True, False])
    assert not photometric_outliers(bad[[0, 5]]).any()  # two layers: nothing to compare against, keep both


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
    st = scene_stack()
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
