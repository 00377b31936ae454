"""Blur check on focal stacks whose answer is known: the sharp picks score ~1, blurred picks and halos are flagged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _metric_helpers import blur
from skimage import data

from metrics import block_sharpness, blurred_share, ghost_share, sharpness_ratio


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """``(3, 192, 192)`` float64 all-in-focus image: a crop of scikit-image's astronaut (textured almost everywhere)."""
    return data.astronaut()[20:404:2, 100:484:2].transpose(2, 0, 1).astype(np.float64) / 255.0


def _stack(img: np.ndarray, n: int = 3, sigma: float = 3.0) -> list[np.ndarray]:
    """N layers, layer k sharp in the k-th vertical band (on 32-px block boundaries), blurred elsewhere."""
    soft = blur(img, sigma)
    w = img.shape[-1]
    edges = np.linspace(0, w, n + 1).astype(int) // 32 * 32
    out = []
    for k in range(n):
        layer = soft.copy()
        layer[..., edges[k] : edges[k + 1]] = img[..., edges[k] : edges[k + 1]]
        out.append(layer)
    return out


def test_sharpest_layer_everywhere_scores_one(scene):
    layers = _stack(scene)
    bs = block_sharpness(scene, layers)
    assert bs.textured.float().mean() > 0.8  # the astronaut crop is textured almost everywhere
    assert sharpness_ratio(scene, layers) == pytest.approx(1.0, abs=0.01)
    assert blurred_share(scene, layers) == 0.0
    assert ghost_share(scene, layers) == 0.0
    # the sharpest layer of each block is the one made sharp there
    band = np.linspace(0, 192, 4).astype(int) // 32 * 32
    expected = np.searchsorted(band[1:], np.arange(6) * 32, side="right")
    assert (bs.best_layer[0][bs.textured[0]] == torch.from_numpy(expected).expand(6, 6)[bs.textured[0]]).all()


def test_a_per_pixel_gather_has_no_unsupported_edges(scene):
    layers = _stack(scene)
    rng = np.random.default_rng(0)
    pick = rng.integers(0, 3, scene.shape[1:])
    gathered = np.choose(pick, [layer for layer in layers])
    bs = block_sharpness(gathered, layers)
    assert bs.unsupported.max() < 0.05  # every edge of a gather is in some source (up to its seams)...
    # ...but its salt-and-pepper seams between sharp and blurred pixels are detail no layer has: flagged as extra
    assert ghost_share(gathered, layers) > 0.3 and float(bs.ratio.max()) > 1.5


def test_blurred_result_is_flagged(scene):
    layers = _stack(scene)
    soft = blur(scene, 2.5)
    assert sharpness_ratio(soft, layers) < 0.3
    assert blurred_share(soft, layers) > 0.7
    # the mean of the layers: each block has one sharp layer out of three, so ~1/9 of its detail energy
    mean = np.mean(layers, axis=0)
    assert sharpness_ratio(mean, layers) < 0.4
    assert blurred_share(mean, layers) > 0.5


def test_wrong_pick_on_a_third_of_the_image(scene):
    layers = _stack(scene)
    # fused = layer 0: sharp on its band, blurred where layers 1 and 2 were sharp
    share = blurred_share(layers[0], layers)
    bs = block_sharpness(layers[0], layers)
    wrong = (bs.best_layer[0] != 0) & bs.textured[0]
    assert share == pytest.approx(float(wrong.sum()) / float(bs.textured[0].sum()), abs=0.05)
    assert 0.55 < share < 0.75


def test_halo_and_ghost_are_flagged(scene):
    layers = _stack(scene)
    ringing = np.clip(scene + 1.5 * (scene - blur(scene, 2.0)), 0, 1)  # unsharp-mask rims on every edge
    assert ghost_share(ringing, layers) > 0.5
    assert sharpness_ratio(ringing, layers) > 1.5
    assert ghost_share(np.clip(scene + 0.2 * (scene - blur(scene, 2.0)), 0, 1), layers) < 0.5  # mild sharpening
    # ghost: a faint copy of the scene shifted by 9 px over sparse edges (a disc on flat ground)
    yy, xx = np.mgrid[:128, :128]
    disc = np.where((yy - 64) ** 2 + (xx - 56) ** 2 < 30**2, 0.8, 0.2)
    a, b = disc.copy(), blur(disc, 4.0)
    ghost = np.clip(0.7 * disc + 0.3 * np.roll(disc, 9, axis=1), 0, 1)
    assert ghost_share(disc, [a, b], block=16) == 0.0
    assert ghost_share(ghost, [a, b], block=16) > 0.1  # the blocks where the copy's vertical edges land


def test_flat_image_has_no_textured_blocks():
    flat = np.full((64, 64), 0.5)
    noisy = np.clip(flat + np.random.default_rng(1).normal(0, 0.5 / 255, flat.shape), 0, 1)  # JPEG-level noise
    for src in ([flat, flat], [noisy, flat]):
        assert math.isnan(sharpness_ratio(flat, src))
        assert math.isnan(blurred_share(flat, src))


def test_kinds_batch_and_data_range(scene):
    layers = _stack(scene)
    soft = blur(scene, 1.5)
    one = sharpness_ratio(soft, layers)
    u8 = np.round(soft * 255).astype(np.uint8)
    assert sharpness_ratio(u8, [np.round(x * 255).astype(np.uint8) for x in layers], data_range=255) == pytest.approx(
        one,
        abs=0.002,  # 8-bit rounding adds a little detail energy to a ratio of ~0.015
    )
    batch = sharpness_ratio(np.stack([soft, scene]), np.stack([np.stack(layers)] * 2))
    assert isinstance(batch, np.ndarray) and batch.shape == (2,)
    assert batch[0] == pytest.approx(one) and batch[1] == pytest.approx(1.0, abs=0.01)
    t = sharpness_ratio(torch.from_numpy(soft).float(), torch.from_numpy(np.stack(layers)).float())
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32 and float(t) == pytest.approx(one, rel=1e-4)
    bs = block_sharpness(scene, layers, block=48)
    assert tuple(bs.ratio.shape) == (1, 4, 4) and bs.block == 48
    assert set(bs.summary()) == {"median_ratio", "blurred_share", "ghost_share", "textured_blocks"}


def test_errors(scene):
    layers = _stack(scene)
    with pytest.raises(ValueError, match="block"):
        sharpness_ratio(scene, layers, block=2)
    with pytest.raises(ValueError, match="at least one block"):
        sharpness_ratio(scene, layers, block=256)
    with pytest.raises(ValueError, match="min_detail"):
        blurred_share(scene, layers, min_detail=-1)
    with pytest.raises(ValueError, match="below"):
        blurred_share(scene, layers, below=0)
    with pytest.raises(ValueError, match="above"):
        ghost_share(scene, layers, above=0.9)
    with pytest.raises(ValueError, match="max_unsupported"):
        ghost_share(scene, layers, max_unsupported=1.0)
    with pytest.raises(ValueError, match="shape"):
        sharpness_ratio(scene, [x[:, :64] for x in layers])
    with pytest.raises(TypeError):
        sharpness_ratio(scene, "layers")


def test_scale_tells_averaged_noise_from_blur(scene):
    """A result that averages equally sharp noisy layers loses the noise's detail energy at full resolution only;
    a blurred one stays low at half resolution too."""
    rng = np.random.default_rng(1)
    clean = _stack(scene)
    noisy = [np.clip(layer + rng.normal(0, 0.03, layer.shape), 0, 1) for layer in clean for _ in range(4)]
    denoised = np.clip(scene + rng.normal(0, 0.03 / 2, scene.shape), 0, 1)  # 4 noisy copies averaged
    full = sharpness_ratio(denoised, noisy)
    half = sharpness_ratio(denoised, noisy, scale=2)
    assert full < 0.85 and half > 0.93, (full, half)
    soft = blur(scene, 1.5)
    assert sharpness_ratio(soft, noisy, scale=2) < 0.6
    # the maps index the same 32-px blocks of the input at every scale
    bs1, bs2 = block_sharpness(scene, clean), block_sharpness(scene, clean, scale=2)
    assert bs2.ratio.shape == bs1.ratio.shape and bs2.block == 32
    assert (bs2.best_layer[bs2.textured] == bs1.best_layer[bs2.textured]).all()
    assert sharpness_ratio(scene, clean, scale=4) == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError, match="power of 2"):
        sharpness_ratio(scene, clean, scale=3)
    with pytest.raises(ValueError, match="under 4 px"):
        sharpness_ratio(scene, clean, block=8, scale=4)
