"""NIQE with the bundled pristine model: feature-fit checks against closed forms, and quality ordering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _metric_helpers import blur
from scipy.special import gamma
from skimage import data

from metrics import niqe
from metrics.niqe import PRISTINE_MODEL, _aggd, _ggd


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return data.camera()[:288, :288].astype(np.float64) / 255.0


def test_ggd_fit_recovers_laplace_and_gaussian_shapes():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.stack([rng.laplace(size=200_000), rng.normal(size=200_000)]))
    shape, var = _ggd(x)
    assert shape.tolist() == pytest.approx([1.0, 2.0], abs=0.05)  # GGD shape 1 = Laplace, 2 = Gaussian
    assert var.tolist() == pytest.approx([2.0, 1.0], rel=0.02)


def test_aggd_fit_symmetric_and_asymmetric():
    rng = np.random.default_rng(1)
    z = rng.normal(size=200_000)
    shape, mean, lvar, rvar = _aggd(torch.from_numpy(np.stack([z, rng.laplace(size=200_000)])))
    assert shape.tolist() == pytest.approx([2.0, 1.0], abs=0.05)
    assert mean.abs().max() < 0.02 and lvar.tolist() == pytest.approx(rvar.tolist(), rel=0.03)
    # asymmetric: left sigma 0.5, right sigma 2. (The reference estimator's normalisation of the moment ratio is
    # exact only for equal sides, so the shape is not checked here; variances and the mean formula are.)
    x = torch.from_numpy(np.where(z < 0, 0.5 * z, 2.0 * z))[None]
    shape, mean, lvar, rvar = _aggd(x)
    assert float(lvar) == pytest.approx(0.25, rel=0.02) and float(rvar) == pytest.approx(4.0, rel=0.02)
    a = float(shape)
    spread = float(rvar.sqrt() - lvar.sqrt())  # ~1.5
    assert float(mean) == pytest.approx(spread * gamma(2 / a) / gamma(1 / a) * np.sqrt(gamma(1 / a) / gamma(3 / a)))


def test_blur_and_noise_score_worse(camera):
    clean = niqe(camera)
    assert clean > 0
    assert niqe(blur(camera, 2.0)) > clean + 5
    noisy = np.clip(camera + np.random.default_rng(0).normal(0, 0.06, camera.shape), 0, 1)
    assert niqe(noisy) > clean + 3


def test_dtypes_batch_and_errors(camera):
    u8 = np.rint(camera * 255).astype(np.uint8)
    assert niqe(u8, data_range=255) == pytest.approx(niqe(u8 / 255.0), abs=1e-9)
    out = niqe(torch.from_numpy(np.stack([camera, blur(camera, 2.0)])[:, None]))
    assert out.shape == (2,) and float(out[0]) == pytest.approx(niqe(camera), rel=1e-9)
    with pytest.raises(ValueError, match="at least 96x96"):
        niqe(camera[:64])


@pytest.mark.slow
def test_committed_model_is_what_the_fit_script_produces():
    from metrics._niqe_fit import IMAGES, fit

    model = fit()
    with np.load(PRISTINE_MODEL) as z:
        assert tuple(z["images"]) == IMAGES
        np.testing.assert_allclose(model["mu"], z["mu"], rtol=1e-10)
        np.testing.assert_allclose(model["cov"], z["cov"], rtol=1e-8, atol=1e-12)
