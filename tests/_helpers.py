"""Shared test helpers: a small synthetic focal stack with a known all-in-focus image, and image writers."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two float images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def textured_image(height: int, width: int, channels: int = 3, *, seed: int = 0) -> np.ndarray:
    """A ``(C, H, W)`` float32 image in [0.05, 0.95] with detail at several scales (fine noise, blobs, edges)."""
    rng = np.random.default_rng(seed)
    planes = []
    for _ in range(channels):
        fine = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), 0.8)
        mid = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), 3.0)
        plane = (fine - fine.mean()) / fine.std() + 0.7 * (mid - mid.mean()) / mid.std()
        planes.append(plane)
    img = np.stack(planes)
    # hard-edged squares add step edges, like printed text or object borders
    for _ in range(6):
        y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
        s = int(rng.integers(6, 16))
        img[:, y : y + s, x : x + s] += rng.choice([-2.0, 2.0])
    img = (img - img.min()) / (img.max() - img.min())
    return (0.05 + 0.9 * img).astype(np.float32)


def depth_regions(height: int, width: int, n: int, *, seed: int = 0) -> np.ndarray:
    """A ``(H, W)`` int map with values 0..n-1: a smooth random field cut into n regions of equal area."""
    rng = np.random.default_rng(seed + 1000)
    field = cv2.GaussianBlur(rng.random((height, width), dtype=np.float32), (0, 0), max(height, width) / 8)
    ranks = np.argsort(np.argsort(field.ravel())).reshape(height, width)
    return np.minimum(ranks * n // ranks.size, n - 1).astype(np.int64)


def synthetic_stack(
    n: int = 4,
    *,
    height: int = 96,
    width: int = 128,
    channels: int = 3,
    blur_step: float = 1.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Focal stack from a known all-in-focus image, in the way of the upstream synthesis (hard-mask compositing).

    Layer k shows the sharp image where the depth region is k and elsewhere the image Gaussian-blurred with
    sigma = ``blur_step * |d - k|``.

    Returns:
        ``stack (N, C, H, W)`` float32 in [0, 1], the all-in-focus image ``(C, H, W)`` and the depth map ``(H, W)``
        (the index of the sharp layer for every pixel).
    """
    aif = textured_image(height, width, channels, seed=seed)
    depth = depth_regions(height, width, n, seed=seed)
    hwc = aif.transpose(1, 2, 0).copy()
    blurred = {0: hwc}
    for dist in range(1, n):
        blurred[dist] = cv2.GaussianBlur(hwc, (0, 0), blur_step * dist, borderType=cv2.BORDER_REFLECT_101)
    stack = np.empty((n, channels, height, width), np.float32)
    for k in range(n):
        layer = np.empty_like(hwc)
        for d in range(n):
            mask = depth == d
            layer[mask] = blurred[abs(d - k)].reshape(height, width, channels)[mask]
        stack[k] = layer.transpose(2, 0, 1)
    return stack, aif, depth


def scene_stack(n: int = 5, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """``(n, 3, h, w)``: one textured scene, each layer defocused by a different amount (valid layers of one stack)."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.random((h // 4, w // 4, 3)).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    img = img.transpose(2, 0, 1)
    return np.stack([img] + [np.stack([cv2.GaussianBlur(c, (0, 0), 0.7 * k) for c in img]) for k in range(1, n)])


def best_layer_psnr(stack: np.ndarray, aif: np.ndarray) -> float:
    """The highest PSNR any single layer of the stack reaches against the all-in-focus image."""
    return max(psnr(layer, aif) for layer in stack)


def write_image(path: Path, image: np.ndarray) -> Path:
    """Write an ``(H, W)`` or ``(H, W, 3)`` uint8/uint16 RGB array with OpenCV (test fixture files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), arr):
        raise OSError(f"could not write {path}")
    return path


def write_tiny_depth_anything(path: Path) -> Path:
    """Save a tiny randomly initialised Depth Anything V2 (the real transformers classes) + processor to ``path``."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=56,
        patch_size=14,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone,
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
        reassemble_hidden_size=32,
    )
    DepthAnythingForDepthEstimation(cfg).save_pretrained(path)
    DPTImageProcessor(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14).save_pretrained(
        path
    )
    return Path(path)


def load_dvc_yaml(path: Path) -> dict:
    """``dvc.yaml`` parsed, with its ``${paths.<name>}`` variables (the ``vars: - paths:`` block) substituted."""
    import re

    import yaml

    text = path.read_text(encoding="utf-8")
    folders = next(v["paths"] for v in yaml.safe_load(text)["vars"] if isinstance(v, dict) and "paths" in v)
    return yaml.safe_load(re.sub(r"\$\{paths\.(\w+)\}", lambda m: str(folders[m.group(1)]), text))
