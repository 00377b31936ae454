"""Peak resident memory of a block of code, as the benchmark tables report it."""

from __future__ import annotations

import resource
import sys

from .._memory import proc_kib

__all__ = ["PeakMemory"]


class PeakMemory:
    """Peak resident memory added while the ``with`` block runs, in MiB.

    On Linux the kernel's high-water mark (``VmHWM``) is reset through ``/proc/self/clear_refs`` on entry, so the
    measurement is exact and free; elsewhere (or where the reset is not permitted) the process's lifetime peak
    (``ru_maxrss``) is used, which over-reports for every stack after the largest one.

    Attributes:
        peak_mb: peak resident memory during the block minus the resident memory at its start.

    Examples:
        >>> import numpy as np
        >>> with PeakMemory() as mem:
        ...     block = np.ones(64 * 2**20, np.uint8)  # 64 MiB, touched
        >>> mem.peak_mb >= 60
        True
    """

    def __init__(self) -> None:
        self.peak_mb = float("nan")
        self._start_kib = 0.0
        self._exact = False

    def __enter__(self) -> PeakMemory:
        self._start_kib = proc_kib("VmRSS") or 0.0
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            self._exact = True
        except OSError:
            self._exact = False
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = proc_kib("VmHWM") if self._exact else None
        if hwm is None:
            # ru_maxrss is KiB on Linux, bytes on macOS
            rss = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
            hwm = rss / 1024.0 if sys.platform == "darwin" else rss
        self.peak_mb = max(0.0, (hwm - self._start_kib) / 1024.0)
