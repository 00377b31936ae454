"""Where and in which precision the network runs: :func:`resolve_device` and :func:`autocast_dtype`; and
:func:`drop_gpu_library_pages`, the resident pages of the CUDA libraries a CPU run never executes."""

from __future__ import annotations

import ctypes
import logging

import torch

from ..errors import StackMFFError

__all__ = ["autocast_dtype", "drop_gpu_library_pages", "resolve_device"]

log = logging.getLogger("stackmff")

# libraries of the CUDA build of torch that a CPU run does not execute (torch links them, so they are loaded anyway)
_GPU_LIBRARIES = ("/nvidia/", "libtorch_cuda", "libcudnn", "libnccl", "libcusparse", "libcublas", "libcufft")
_MADV_DONTNEED = 4


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


def drop_gpu_library_pages() -> int:
    """Release the resident pages of the CUDA libraries that hold only their file's contents; returns the bytes.

    The CUDA build of torch links its CUDA libraries, so ``import torch`` maps them and touches ~140 MB of their code
    and read-only data (measured: torch 2.14+cu130, 510 MB RSS after the import, 228 MB of it file pages) even when
    the network runs on the CPU. Only mappings without a private (copy-on-write) page are released (smaps
    ``Anonymous: 0``: relocated data and ``.bss`` are left alone), with ``MADV_DONTNEED``: a page used later is read
    back from the file, so nothing changes but the resident memory. Linux only; elsewhere (or if ``/proc`` cannot
    be read) it does nothing and returns 0.
    """
    try:
        with open("/proc/self/smaps") as f:
            lines = f.read().splitlines()
        madvise = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return 0
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    maps: list[list] = []  # [start, end, perms, path, rss kB, anonymous kB]
    for line in lines:
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            maps.append([start, end, parts[1], parts[5] if len(parts) > 5 else "", 0, 0])
        elif maps and parts[:1] == ["Rss:"]:
            maps[-1][4] = int(parts[1])
        elif maps and parts[:1] == ["Anonymous:"]:
            maps[-1][5] = int(parts[1])
    freed = 0
    for start, end, perms, path, rss, anon in maps:
        if rss and not anon and "w" not in perms and any(s in path for s in _GPU_LIBRARIES):
            if madvise(start, end - start, _MADV_DONTNEED) == 0:
                freed += rss * 1024
    log.debug("released %.0f MB of CUDA library pages (CPU run)", freed / 2**20)
    return freed
