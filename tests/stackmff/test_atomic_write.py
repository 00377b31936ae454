"""The one atomic writer (:func:`stackmff.io.atomic_write`, :func:`stackmff.io.atomic_folder`): the final name shows
the old content or the complete new one, a failure leaves no temp file, and a killed writer's temp file is swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stackmff.errors import StackMFFError
from stackmff.io import TEMP_SUFFIX, atomic_folder, atomic_write, sweep_stale_temps

ROOT = Path(__file__).resolve().parents[2]


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_writes_bytes_text_and_path_and_leaves_only_the_file(tmp_path):
    with atomic_write(tmp_path / "sub" / "a.bin") as f:  # the parent folder is created
        f.write(b"\x00\x01")
    with atomic_write(tmp_path / "b.txt", mode="w") as f:
        f.write("µm\n")
    with atomic_write(tmp_path / "c.png", mode=None) as tmp:  # for writers that take a file name
        assert tmp.parent == tmp_path and tmp.name.endswith(TEMP_SUFFIX) and tmp.stat().st_size == 0
        tmp.write_bytes(b"png")
    assert (tmp_path / "sub" / "a.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "b.txt").read_bytes() == "µm\n".encode()
    assert (tmp_path / "c.png").read_bytes() == b"png"
    assert _names(tmp_path) == {"sub", "b.txt", "c.png"} and _names(tmp_path / "sub") == {"a.bin"}


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_files_and_folders_get_the_umask_permissions_not_the_temp_ones(tmp_path, mask, file_mode, dir_mode):
    old = os.umask(mask)
    try:
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"a")
        with atomic_folder(tmp_path / "d") as tmp:
            (tmp / "x").write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == file_mode  # mkstemp would give 0600
    assert (tmp_path / "d").stat().st_mode & 0o777 == dir_mode  # mkdtemp would give 0700


@pytest.mark.parametrize("mode", ["wb", None])
def test_an_exception_removes_the_temp_and_keeps_the_existing_file(tmp_path, mode):
    (tmp_path / "a.bin").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "a.bin", mode=mode, overwrite=True) as f:
            (f.write if mode else f.write_bytes)(b"new, half written")
            raise KeyboardInterrupt
    assert _names(tmp_path) == {"a.bin"} and (tmp_path / "a.bin").read_bytes() == b"old"


def test_overwrite_replaces_and_without_it_an_existing_file_is_refused_before_the_body(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"old")
    with atomic_write(tmp_path / "a.bin", overwrite=True) as f:
        f.write(b"new")
    assert (tmp_path / "a.bin").read_bytes() == b"new"
    ran = []
    with pytest.raises(StackMFFError, match=r"a\.bin exists; pass --overwrite"):
        with atomic_write(tmp_path / "a.bin") as f:
            ran.append(True)
    assert not ran and _names(tmp_path) == {"a.bin"} and (tmp_path / "a.bin").read_bytes() == b"new"
    with pytest.raises(StackMFFError, match="is a folder"):
        with atomic_write(tmp_path, overwrite=True):
            pass


def test_a_file_that_appears_meanwhile_is_not_replaced_without_overwrite(tmp_path):
    with pytest.raises(StackMFFError, match="appeared while this run was working"):
        with atomic_write(tmp_path / "a.bin") as f:
            f.write(b"mine")
            (tmp_path / "a.bin").write_bytes(b"theirs")  # e.g. a concurrent run
    assert _names(tmp_path) == {"a.bin"} and (tmp_path / "a.bin").read_bytes() == b"theirs"


def test_folder_replaced_as_a_whole_refused_without_overwrite_kept_on_failure(tmp_path):
    out = tmp_path / "d"
    with atomic_folder(out) as tmp:
        (tmp / "old.json").write_text("1")
    with pytest.raises(StackMFFError, match="exists; pass --overwrite"):
        with atomic_folder(out):
            pass
    with pytest.raises(RuntimeError):
        with atomic_folder(out, overwrite=True) as tmp:
            (tmp / "new.json").write_text("2")
            raise RuntimeError("failed half way")
    assert _names(tmp_path) == {"d"} and _names(out) == {"old.json"}
    with atomic_folder(out, overwrite=True) as tmp:
        (tmp / "new.json").write_text("2")
    assert _names(tmp_path) == {"d"} and _names(out) == {"new.json"}  # no file of the old folder stays


_KILLED = """
import os, sys
from stackmff.io import atomic_folder, atomic_write
with atomic_write(sys.argv[1] + "/a.bin") as f, atomic_folder(sys.argv[1] + "/d") as d:
    f.write(b"half")
    f.flush()
    os._exit(9)  # killed: no exception handler, no cleanup runs
"""


def test_temps_of_a_killed_writer_are_named_for_sweep_stale_temps(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path)], env=env, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    left = sorted(tmp_path.iterdir())
    assert len(left) == 2 and all(p.name.endswith(TEMP_SUFFIX) for p in left)
    assert sorted(sweep_stale_temps(tmp_path)) == left
    assert _names(tmp_path) == set()
