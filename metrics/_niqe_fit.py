"""Fit the NIQE pristine model on the natural photographs bundled with scikit-image (writes the committed .npz).

Run ``python -m metrics._niqe_fit`` to regenerate ``metrics/assets/niqe_pristine_skimage.npz``. Nothing is
downloaded: the images ship inside the scikit-image wheel (BSD licence). Following Mittal et al. (2013), only
patches whose sharpness (mean local sigma) exceeds 0.75 x the sharpest patch of their image are kept; the model is
the mean and covariance of their 36 features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage
import torch
from skimage import data

from stackmff.io import atomic_write

from .functional.color import rgb_to_gray
from .niqe import PRISTINE_MODEL, niqe_features

# natural photographs only: no synthetic, text, microscopy, astronomy or motion-blurred (data.clock) images
IMAGES = ("astronaut", "brick", "camera", "chelsea", "coffee", "coins", "grass", "gravel", "moon", "rocket")
SHARPNESS_THRESHOLD = 0.75


def fit(images: tuple[str, ...] = IMAGES) -> dict[str, np.ndarray]:
    """Return ``{"mu": (36,), "cov": (36, 36), "n_patches": ()}`` fitted on the named ``skimage.data`` images."""
    feats = []
    for name in images:
        img = torch.from_numpy(np.asarray(getattr(data, name)(), dtype=np.float64))
        img = img.permute(2, 0, 1) if img.ndim == 3 else img[None]  # (C, H, W) on 0-255
        gray = rgb_to_gray(img[None, :3])
        f, sharp = niqe_features(gray)
        feats.append(f[sharp > SHARPNESS_THRESHOLD * sharp.max()])
    allf = torch.cat(feats).numpy()
    return {"mu": allf.mean(0), "cov": np.cov(allf, rowvar=False), "n_patches": np.array(len(allf))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=PRISTINE_MODEL, help="where to write the model")
    args = parser.parse_args(argv)
    model = fit()
    with atomic_write(args.output, overwrite=True) as fh:
        np.savez(fh, **model, images=np.array(IMAGES), skimage_version=np.array(skimage.__version__))
    print(f"wrote {args.output}: {int(model['n_patches'])} patches from {len(IMAGES)} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
