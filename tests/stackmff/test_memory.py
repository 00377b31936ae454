"""The /proc readers and the heap release of :mod:`stackmff._memory`."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest

from stackmff import _memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@linux
def test_resident_and_available_memory_are_read_from_proc():
    blob = bytearray(64 * 2**20)  # 64 MB, touched: resident
    assert _memory.resident_mb() > 64
    assert _memory.proc_kib("VmHWM") >= _memory.proc_kib("VmRSS") > 64 * 1024
    assert 0 < _memory.available_bytes() < _memory.proc_kib("MemTotal", "/proc/meminfo") * 1024
    del blob
    assert _memory.proc_kib("NoSuchField") is None and _memory.proc_kib("VmRSS", "/nonexistent") is None


def test_unknown_available_memory_falls_back(monkeypatch):
    monkeypatch.setattr(_memory, "available_bytes", lambda: None)
    assert _memory.available_memory_mb() == 4096.0 and _memory.available_memory_mb(100.0) == 100.0


@linux
def test_freed_heap_pages_are_given_back():
    if _memory._malloc_trim() is None:
        pytest.skip("not glibc")
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 100 * 1024, 400  # below glibc's mmap threshold: from the heap, 40 MB in all
    blocks = [libc.malloc(size) for _ in range(count)]
    pin = libc.malloc(size)  # above them: the heap's top cannot shrink by itself
    for b in blocks:
        ctypes.memset(b, 1, size)  # resident
    for b in blocks:
        libc.free(b)
    held = _memory.resident_mb()
    assert _memory.release_free_heap() is True
    assert held - _memory.resident_mb() > 30  # most of the 40 MB left the process
    libc.free(pin)


_CHURN = """
import ctypes, ctypes.util, resource, sys
from stackmff import _memory
if sys.argv[1] == "tuned":
    assert _memory.tune_malloc() is True and _memory.tune_malloc() is False  # once per process
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 2 * 2**20
for _ in range(20):  # per round 40 blocks of 2 MB made, written and freed, as a fusion's tiles make and free tensors
    blocks = [libc.malloc(size) for _ in range(40)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    for b in blocks:
        libc.free(b)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
"""


@linux
def test_tuned_malloc_reuses_freed_arrays_instead_of_faulting_them_in_again():
    import os
    import subprocess

    if _memory._glibc("mallopt", (ctypes.c_int, ctypes.c_int)) is None:
        pytest.skip("not glibc")
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES" and not k.startswith("MALLOC_")}

    def faults(mode: str, extra: dict | None = None) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _CHURN, mode], env={**env, **(extra or {})}, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1])

    default, tuned = faults("default"), faults("tuned")
    # default glibc gives the freed top of its heap back every round: the 80 MB are faulted in again 20 times
    assert default - tuned > 10 * 80 * 256, (default, tuned)
    # a user's own malloc settings win: nothing is changed then
    out = subprocess.run(
        [sys.executable, "-c", "from stackmff import _memory; print(_memory.tune_malloc())"],
        env={**env, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"},
        capture_output=True,
        text=True,
    )
    assert out.stdout.strip() == "False", out.stderr
