"""This process's resident memory and the machine's free memory (Linux ``/proc``), and giving freed heap back.

No torch or numpy import here: the CLI's budget check, the tile planner, the decoder's decompression-bomb guard and
the benchmarks' peak meter all read the same two files through :func:`proc_kib`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["available_bytes", "available_memory_mb", "proc_kib", "release_free_heap", "resident_mb"]


def proc_kib(field: str, path: str = "/proc/self/status") -> int | None:
    """The kB value of ``field`` (e.g. ``VmRSS``, ``VmHWM``, ``MemAvailable``) in ``path``; None where unknown."""
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_bytes() -> int | None:
    """Bytes the kernel can give without swapping (``MemAvailable``); None where unknown (not Linux)."""
    kib = proc_kib("MemAvailable", "/proc/meminfo")
    return None if kib is None else kib * 1024


def available_memory_mb(default: float = 4096.0) -> float:
    """:func:`available_bytes` in MB, ``default`` where unknown."""
    avail = available_bytes()
    return default if avail is None else avail / 2**20


def resident_mb() -> float:
    """Resident memory of this process (``VmRSS``) in MB; 0 where unknown."""
    kib = proc_kib("VmRSS")
    return 0.0 if kib is None else kib / 1024


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        fn = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return None
    if fn is not None:
        fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``); True if it released any.

    Arrays of up to 32 MB (glibc's largest dynamic mmap threshold) come from the heap, and after a phase that made
    and freed many of them (the network's tiles, from several threads' arenas) their pages stay resident although
    free. Measured on 10 x 12 MP (default ``stackmff_v3``): 130 MB released between the network and the coarse
    pyramid levels. Elsewhere than glibc it does nothing.
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
