"""Where and in which precision the network runs: :func:`resolve_device` and :func:`autocast_dtype`."""

from __future__ import annotations

import torch

from ..errors import StackMFFError

__all__ = ["autocast_dtype", "resolve_device"]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU; otherwise ``torch.device(device)``.

    Raises:
        StackMFFError: an unknown device, or a CUDA device was asked for but none is available.
    """
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise StackMFFError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if dev.type not in ("cpu", "cuda"):
        raise StackMFFError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise StackMFFError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``precision`` on ``device``: ``None`` (fp32) or ``torch.bfloat16``.

    "fp32" → ``None``; "bf16" → bf16; "auto" → bf16 where it is native (CUDA, or a CPU whose oneDNN has bf16
    instructions: AVX512-BF16/AMX), else ``None``.

    Raises:
        StackMFFError: ``precision`` is not one of auto, fp32, bf16.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise StackMFFError(f"precision must be auto, fp32 or bf16, got {precision!r}")
    return torch.bfloat16 if precision == "bf16" or (precision == "auto" and _fast_bf16(device)) else None


def _fast_bf16(dev: torch.device) -> bool:
    # bf16 by default where it is native: CUDA, or a CPU whose oneDNN has bf16 instructions (AVX512-BF16/AMX)
    if dev.type == "cuda":
        return True
    return dev.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
