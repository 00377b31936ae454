"""Relative depth for images that have none, with Depth Anything V2 (``transformers``) from a LOCAL checkpoint.

Upstream StackMFF takes the depth of every training image except NYU's from Depth Anything V2. Nothing is downloaded
at run time: ``checkpoint`` is a folder written by ``save_pretrained`` (``config.json``, weights and
``preprocessor_config.json``), e.g. a copy of the Hugging Face repo ``depth-anything/Depth-Anything-V2-Small-hf``.

Output: ``<out>/<stem>.png``, 16-bit, per-image min-max normalised model output (relative inverse depth: larger =
nearer), at the input image's size. Existing outputs are skipped, so an interrupted run resumes.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from ..errors import StackMFFError
from ..io import IMAGE_EXTENSIONS, natural_key, read_rgb8, save_image

__all__ = ["estimate_depth", "load_depth_model"]

log = logging.getLogger("stackmff")

_HOW_TO_GET = (
    "download it once on a machine with internet, e.g. `huggingface-cli download depth-anything/Depth-Anything-V2-Small-hf "
    "--local-dir <dir>`, and pass --checkpoint <dir>"
)


def load_depth_model(checkpoint: str | os.PathLike, *, device: str | None = None, dtype: str | None = None):
    """Load model + image processor from a local folder; returns ``(model, processor, device, torch_dtype)``.

    Args:
        checkpoint: local ``save_pretrained`` folder.
        device: torch device (default: cuda if available, else cpu).
        dtype: ``"float32"``, ``"float16"`` or ``"bfloat16"`` (default: bfloat16/float16 on CUDA, float32 on CPU).

    Raises:
        StackMFFError: the folder is missing or does not hold a Depth Anything checkpoint.
    """
    import torch

    try:
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation
    except ImportError:
        raise StackMFFError(
            "Depth Anything V2 runs with transformers, which is not installed: pip install 'stackmff[depth]'"
        ) from None

    ckpt = Path(checkpoint)
    if not (ckpt / "config.json").is_file():
        raise StackMFFError(f"no Depth Anything V2 checkpoint at {ckpt} (config.json missing); {_HOW_TO_GET}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        if device.startswith("cuda"):
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
    if dtype not in ("float32", "float16", "bfloat16"):
        raise StackMFFError(f"dtype must be float32, float16 or bfloat16, got {dtype!r}.")
    torch_dtype = getattr(torch, dtype)
    try:
        processor = AutoImageProcessor.from_pretrained(ckpt, local_files_only=True)
        model = AutoModelForDepthEstimation.from_pretrained(ckpt, local_files_only=True, torch_dtype=torch_dtype)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StackMFFError(f"cannot load a depth model from {ckpt} ({first}); {_HOW_TO_GET}") from None
    return model.to(device).eval(), processor, device, torch_dtype


def estimate_depth(
    images: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike,
    batch_size: int = 8,
    device: str | None = None,
    dtype: str | None = None,
    progress: bool = True,
) -> dict:
    """Write a 16-bit relative depth PNG for every image in ``images`` that has none in ``out_dir`` yet.

    Images are batched by identical size (so the processor's aspect-preserving resize yields equal tensors); each
    prediction is resized back to its image (bicubic) and min-max normalised to 0..65535.

    Args:
        images: a folder of images (or a single image file).
        out_dir: output folder.
        checkpoint: local Depth Anything (V2) checkpoint folder.
        batch_size: images per forward pass.
        device: torch device (default cuda if available).
        dtype: float32 / float16 / bfloat16 (default: half precision on GPU).
        progress: tqdm progress bar.

    Returns:
        ``{"written": k, "skipped": s}``.
    """
    import torch
    from tqdm import tqdm

    src = Path(images)
    if src.is_dir():
        files = sorted((p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS), key=natural_key)
    elif src.is_file():
        files = [src]
    else:
        raise StackMFFError(f"image folder not found: {src}; run `stackmff extract` first")
    if batch_size < 1:
        raise StackMFFError(f"batch_size must be >= 1, got {batch_size}.")
    out = Path(out_dir)
    todo = [p for p in files if not (out / f"{p.stem}.png").exists()]
    skipped = len(files) - len(todo)
    if not todo:
        return {"written": 0, "skipped": skipped}
    model, processor, device, torch_dtype = load_depth_model(checkpoint, device=device, dtype=dtype)

    def read(p: Path) -> np.ndarray:
        return read_rgb8(p)

    # group by size from the headers would need a decode anyway; decode lazily per batch, group within a window
    written = 0
    bar = tqdm(total=len(todo), desc="depth", unit="img", disable=not progress)
    try:
        for start in range(0, len(todo), batch_size * 4):
            window = [(p, read(p)) for p in todo[start : start + batch_size * 4]]
            groups: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
            for p, img in window:
                groups.setdefault(img.shape[:2], []).append((p, img))
            for (h, w), items in groups.items():
                for b in range(0, len(items), batch_size):
                    batch = items[b : b + batch_size]
                    inputs = processor(images=[img for _, img in batch], return_tensors="pt")
                    pixels = inputs["pixel_values"].to(device=device, dtype=torch_dtype)
                    with torch.inference_mode():
                        pred = model(pixel_values=pixels).predicted_depth  # (B, h', w')
                        pred = torch.nn.functional.interpolate(
                            pred[:, None].float(), size=(h, w), mode="bicubic", align_corners=False
                        )[:, 0]
                    for (p, _), d in zip(batch, pred.cpu().numpy()):
                        lo, hi = float(d.min()), float(d.max())
                        norm = (d - lo) / (hi - lo) if hi > lo else np.zeros_like(d)
                        save_image(out / f"{p.stem}.png", norm.astype(np.float32), bit_depth=16, overwrite=True)
                        written += 1
                        bar.update()
    finally:
        bar.close()
    return {"written": written, "skipped": skipped}
