"""Thread count for a fusion on a busy machine (stackmff._cpu)."""

from __future__ import annotations

import os
import sys

import pytest

from stackmff import _cpu
from stackmff.errors import StackMFFError


def _machine(monkeypatch, cores: int, runnable: list[int]) -> None:
    reads = iter(runnable)
    monkeypatch.setattr(_cpu, "available_cores", lambda: cores)
    monkeypatch.setattr(_cpu, "_runnable", lambda: next(reads))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize(
    ("cores", "runnable", "expected"),
    [
        (2, [1, 1, 1, 1, 1], 2),  # only the reader runs: both cores are free
        (2, [2, 2, 2, 2, 2], 1),  # one other busy process: one free core
        (2, [5, 6, 4, 5, 7], 1),  # overloaded: never fewer than one thread
        (8, [3, 3, 9, 3, 1], 6),  # a short spike in one sample does not count (median)
        (1, [1, 1, 1, 1, 1], 1),
    ],
)
def test_auto_threads_are_the_free_cores(monkeypatch, cores, runnable, expected):
    _machine(monkeypatch, cores, runnable)
    assert _cpu.choose_threads() == expected


def test_explicit_threads_win_and_env_caps_auto(monkeypatch):
    _machine(monkeypatch, 8, [1] * 10)
    assert _cpu.choose_threads(3) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert _cpu.choose_threads("auto") == 2
    assert _cpu.choose_threads(4) == 4  # an explicit count is not capped


@pytest.mark.parametrize("bad", [-1, "many"])
def test_bad_threads_is_a_one_line_error(bad):
    with pytest.raises(StackMFFError, match="threads"):
        _cpu.choose_threads(bad)


def test_real_machine_reads():
    assert 1 <= _cpu.available_cores() <= (os.cpu_count() or 1)
    assert 1 <= _cpu.choose_threads() <= _cpu.available_cores()
    assert _cpu.busy_cores(samples=2, interval=0.0) >= 0


def test_passive_openmp_only_before_torch_and_never_over_the_user(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert _cpu.passive_openmp() is True and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert _cpu.passive_openmp() is False and os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    monkeypatch.setitem(sys.modules, "torch", object())
    assert _cpu.passive_openmp() is False and "OMP_WAIT_POLICY" not in os.environ


def test_governor_follows_the_free_cores_between_tiles(monkeypatch):
    # 4 cores: idle, then another job takes 3, then it ends; each measurement is 5 reads of /proc/loadavg
    _machine(monkeypatch, 4, [1] * 5 + [4] * 5 + [4] * 5 + [1] * 5)
    applied = []
    gov = _cpu.ThreadGovernor(4, 4, applied.append, interval=0.0)
    assert [gov.update() for _ in range(4)] == [4, 1, 1, 4]
    assert applied == [1, 4] and gov.counts == [4, 1, 4]  # applied only when the count changes


def test_governor_waits_its_interval_and_keeps_the_callers_ceiling(monkeypatch):
    _machine(monkeypatch, 8, [1] * 5)
    applied = []
    gov = _cpu.ThreadGovernor(1, 2, applied.append, interval=3600.0)
    assert gov.update() == 1 and applied == []  # not measured again before the interval
    gov.interval = 0.0
    assert gov.update() == 2 and applied == [2]  # 8 free cores, but the caller allowed 2
