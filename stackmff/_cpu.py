"""How many CPU threads a fusion should use on a machine that may be busy with other work (no torch import here).

torch and OpenCV start one worker thread per core and, between parallel regions, spin-wait for the others. When
other processes hold some of the cores, threads wait for cores that are not free: on 2 cores beside one other busy
process, 2 torch threads made the network part 4-30x slower and used 1.5-2.8x the CPU time of 1 thread. So a learned
method runs with one thread per *free* core: the cores this process may use (``os.sched_getaffinity``) minus the
ones other processes keep busy right now (``/proc/loadavg``'s count of runnable threads, sampled a few times).
When some cores are busy, OpenMP's idle threads are also told to sleep rather than spin (:func:`passive_openmp`).

The count is not fixed for a long run: :class:`ThreadGovernor` measures the free cores again between tiles (at most
every few seconds) and follows them, so a fusion started beside a busy job speeds up once that job ends, and one
started on an idle machine gives cores back when another job starts.
"""

from __future__ import annotations

import os
import sys
import time

from .errors import StackMFFError

__all__ = ["ThreadGovernor", "available_cores", "busy_cores", "choose_threads", "passive_openmp"]


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where that is unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _runnable() -> int | None:
    # /proc/loadavg: "0.52 0.58 0.59 3/1021 12345"; the 4th field is runnable/total scheduling entities, this one
    # (the reader) included
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def busy_cores(samples: int = 5, interval: float = 0.01) -> int:
    """Threads of other processes running or waiting for a CPU now: median of ``samples`` reads of /proc/loadavg.

    The 1-minute load average is not used: it lags by a minute and counts this process' own earlier work (the same
    command run in a loop would see its own load and halve its threads). 0 where /proc is not available.
    """
    counts = []
    for i in range(samples):
        r = _runnable()
        if r is None:
            return 0
        counts.append(max(0, r - 1))  # minus the reading thread
        if i + 1 < samples:
            time.sleep(interval)
    counts.sort()
    return counts[len(counts) // 2]


def choose_threads(threads: int | str | None = None) -> int:
    """Intra-op threads for a fusion: ``threads`` when a positive number, else (``None``, 0, "auto") the free cores.

    "Free" = :func:`available_cores` minus :func:`busy_cores`, at least 1; ``OMP_NUM_THREADS`` in the environment
    caps it (the user asked for at most that many).

    Raises:
        StackMFFError: ``threads`` is negative or not a number.
    """
    if threads not in (None, "auto"):
        try:
            n = int(threads)
        except (TypeError, ValueError):
            raise StackMFFError(f"threads must be a number or 'auto', got {threads!r}; e.g. --threads 1") from None
        if n < 0:
            raise StackMFFError(f"threads must be >= 0 (0 = auto), got {n}; e.g. --threads 1")
        if n > 0:
            return n
    cores = available_cores()
    n = max(1, cores - busy_cores()) if cores > 1 else 1
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        n = min(n, int(env))
    return n


def passive_openmp() -> bool:
    """Ask OpenMP (torch's intra-op pool, GNU libgomp) to let idle threads sleep instead of spinning between
    parallel regions: ``OMP_WAIT_POLICY=PASSIVE``, unless the user set it. Only effective before torch is imported
    (libgomp reads it when it loads); returns whether it was set now.
    """
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


class ThreadGovernor:
    """Follow the free cores during a long fusion: call :meth:`update` between units of work (tiles).

    At most every ``interval`` seconds it measures the free cores again (:func:`choose_threads`, capped at
    ``ceiling``) and, when the count changed, calls ``apply(n)`` (e.g. ``torch.set_num_threads``). Call it from the
    thread that runs the work: OpenMP's thread count belongs to the calling thread.

    Args:
        start: the thread count the work starts with.
        ceiling: never more than this (the caller's own setting, e.g. ``torch.get_num_threads()``).
        apply: sets the thread count.
        interval: seconds between measurements (each costs ~40 ms of sleeping, no CPU).

    Attributes:
        counts: every count used, in order (the first is ``start``).
    """

    def __init__(self, start: int, ceiling: int, apply, *, interval: float = 5.0) -> None:
        self.current, self.ceiling, self._apply, self.interval = start, max(1, ceiling), apply, interval
        self.counts = [start]
        self._last = time.monotonic()

    def update(self) -> int:
        """Measure again if ``interval`` has passed; apply and return the thread count to use now."""
        now = time.monotonic()
        if now - self._last < self.interval:
            return self.current
        self._last = now
        n = min(choose_threads(None), self.ceiling)
        if n != self.current:
            self._apply(n)
            self.current = n
            self.counts.append(n)
        return n
