"""This process's resident memory and the machine's free memory (Linux ``/proc``), and giving freed heap back.

No torch or numpy import here: the CLI's budget check, the tile planner, the decoder's decompression-bomb guard and
the benchmarks' peak meter all read the same two files through :func:`proc_kib`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

__all__ = ["available_bytes", "available_memory_mb", "proc_kib", "release_free_heap", "resident_mb", "tune_malloc"]


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


@functools.lru_cache(maxsize=2)
def _glibc(name: str, argtypes: tuple):
    """glibc's function ``name`` with ``argtypes`` (returning int), or None elsewhere (musl, macOS, Windows)."""
    lib = ctypes.util.find_library("c")
    try:
        fn = getattr(ctypes.CDLL(lib), name) if lib else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        fn.argtypes, fn.restype = list(argtypes), ctypes.c_int
    return fn


def _malloc_trim():
    return _glibc("malloc_trim", (ctypes.c_size_t,))


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 32 * 2**20  # the largest mallopt accepts on 64-bit (HEAP_MAX_SIZE / 2)
_TRIM_THRESHOLD = 2**31 - 1
_tuned = False


def tune_malloc() -> bool:
    """Keep freed heap memory for reuse instead of returning it to the system at once (glibc); True if set now.

    A fusion makes and frees arrays of tens of MB per tile and band. glibc gives the top of its heap back whenever
    more than twice its (dynamic) mmap threshold is free there, so the next band's arrays fault their pages in
    again: on 50 x 3 MP (default ``stackmff_v3``, 2 cores) 44 million minor page faults and 87 s of system time
    in a 173 s run. With the mmap threshold fixed at 32 MB and the automatic trim off, the same run took 135 s with
    3.4 s of system time and 0.4 million faults, the same output bytes, peak RSS 1.73 instead of 1.65 GB
    (:func:`release_free_heap` still trims between the phases). Process-wide: the CLI and the pipeline stages call
    it for their own process, the library does not. Not set where the user configured malloc (``GLIBC_TUNABLES``
    with a malloc tunable, ``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``) or elsewhere than glibc.
    """
    global _tuned
    if _tuned:
        return False
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(
        k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
    ):
        return False
    fn = _glibc("mallopt", (ctypes.c_int, ctypes.c_int))
    # the mmap threshold first: setting either one ends glibc's dynamic thresholds, and a trim threshold alone
    # would leave every array above the default 128 kB to mmap (measured: 35 million faults on 20 x 3 MP)
    if fn is None or not fn(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or not fn(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD):
        return False
    _tuned = True
    return True


def release_free_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``); True if it released any.

    Arrays of up to 32 MB (glibc's largest dynamic mmap threshold) come from the heap, and after a phase that made
    and freed many of them (the network's tiles, from several threads' arenas) their pages stay resident although
    free. Measured on 10 x 12 MP (default ``stackmff_v3``): 130 MB released between the network and the coarse
    pyramid levels. Elsewhere than glibc it does nothing.
    """
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
