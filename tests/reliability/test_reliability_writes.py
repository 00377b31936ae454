"""Issue #15, the cases the corpus table cannot express as one argv: failing writes (a real EFBIG from the kernel),
concurrent runs, all-or-nothing outputs, signals, temp files, permissions, pixel types, EXIF orientation, batch
resume, align and train. Each asserts the exit code, the one stderr line and the exact files afterwards."""

from __future__ import annotations

import json
import os
import resource
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from _helpers import synthetic_stack, write_image
from PIL import Image, ImageOps
from test_reliability_corpus import files_under, stderr_lines, write_stack

from stackmff.cli import main
from stackmff.io import OutputSet, load_stack, read_image_file, sweep_stale_temps

ROOT = Path(__file__).resolve().parents[2]
FM = ["-m", "focus_measure", "--align", "none"]


def _one_error(capfd, code: int, says: str, rc: int = 2) -> str:
    err = capfd.readouterr().err
    lines = stderr_lines(err)
    assert code == rc, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert says in lines[0], lines[0]
    return lines[0]


# ----------------------------------------------------------------------------------------------------- writes
@pytest.mark.parametrize("command", ["fuse", "align"])
def test_failing_write_leaves_nothing_and_says_so(tmp_path, capfd, command):
    """The kernel refuses a write (file-size limit: EFBIG, as a full disk gives ENOSPC): no 'wrote', no partial file,
    not even the output folder the command created; align leaves no subset of the layers."""
    write_stack(tmp_path / "st")
    before = files_under(tmp_path)
    argv = {
        "fuse": ["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "new" / "out.png"), *FM],
        "align": ["align", str(tmp_path / "st"), "-o", str(tmp_path / "al")],
    }[command]
    limit = 1000  # the fused PNG and each aligned layer are ~5 kB
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    capfd.readouterr()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old[1]))
    try:
        code = main(argv)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    _one_error(capfd, code, "could not write")
    assert files_under(tmp_path) == before  # no truncated PNG, no temp file, no first layers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["st"]  # nor the folders made for the outputs


def test_a_later_failing_write_discards_the_earlier_files_of_the_set(tmp_path):
    old = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with pytest.raises(Exception, match=r"could not write .*big\.bin"):
            with OutputSet() as outs:
                outs.write_bytes(tmp_path / "sub" / "small.bin", b"x" * 100)
                resource.setrlimit(resource.RLIMIT_FSIZE, (1000, old[1]))
                outs.write_bytes(tmp_path / "sub" / "big.bin", b"x" * 5000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert list(tmp_path.iterdir()) == []


def test_concurrent_run_cannot_replace_the_other_output(tmp_path, capfd, monkeypatch):
    """Another run writes the same name while this one works: this one refuses instead of replacing it."""
    write_stack(tmp_path / "st")
    out = tmp_path / "out.png"
    real = OutputSet.commit

    def other_run_finishes_first(self):  # between our checks and our rename
        out.write_bytes(b"the other run's image")
        return real(self)

    monkeypatch.setattr(OutputSet, "commit", other_run_finishes_first)
    capfd.readouterr()
    code = main(["fuse", str(tmp_path / "st"), "-o", str(out), *FM])
    _one_error(capfd, code, "appeared while this run was working")
    assert out.read_bytes() == b"the other run's image"
    assert files_under(tmp_path) == {f"st/{i}.png" for i in range(3)} | {"out.png"}


def test_outputs_of_one_command_all_or_none(tmp_path, capfd, monkeypatch):
    """The preview name is taken while fusing: the fused image and the index map already renamed are removed."""
    write_stack(tmp_path / "st")
    real = OutputSet.commit

    def preview_appears(self):
        (tmp_path / "m_preview.png").write_bytes(b"someone else's")
        return real(self)

    monkeypatch.setattr(OutputSet, "commit", preview_appears)
    capfd.readouterr()
    argv = ["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM, "--index-map", str(tmp_path / "m.png")]
    code = main(argv)
    _one_error(capfd, code, "m_preview.png appeared")
    assert files_under(tmp_path) == {f"st/{i}.png" for i in range(3)} | {"m_preview.png"}


def test_interrupt_during_the_write_removes_the_temp_file(tmp_path, capfd, monkeypatch):
    write_stack(tmp_path / "st")
    before = files_under(tmp_path)

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    capfd.readouterr()
    code = main(["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM])
    _one_error(capfd, code, "interrupted", rc=130)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_honour_the_umask(tmp_path, mask, mode):
    write_stack(tmp_path / "st")
    old = os.umask(mask)
    try:
        assert main(["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM]) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "out.png").stat().st_mode & 0o777 == mode


def test_stale_temp_files_of_dead_runs_are_swept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    stale = [tmp_path / f".out.png.{pid}.k3j2.stackmff-tmp", tmp_path / f".last.pt.tmp{pid}"]
    live = tmp_path / f".x.png.{os.getppid()}.abcd.stackmff-tmp"  # a running process's temp file stays
    mine = tmp_path / "keep.stackmff-tmp"  # not our naming
    for p in [*stale, live, mine]:
        p.write_bytes(b"x")
    assert sorted(sweep_stale_temps(tmp_path)) == sorted(stale)
    assert files_under(tmp_path) == {live.name, mine.name}


def test_output_set_commit_failure_removes_what_it_renamed(tmp_path):
    with pytest.raises(Exception, match="appeared"):
        with OutputSet() as outs:
            outs.write_bytes(tmp_path / "a.bin", b"a")
            outs.write_bytes(tmp_path / "b.bin", b"b")
            (tmp_path / "b.bin").write_bytes(b"theirs")
    assert files_under(tmp_path) == {"b.bin"} and (tmp_path / "b.bin").read_bytes() == b"theirs"


# -------------------------------------------------------------------------------------------------- pixel types
def test_float_0_255_and_0_1_tiffs_give_the_same_image(tmp_path, caplog):
    stack, _, _ = synthetic_stack(3, height=40, width=48)
    for scale, name in ((1.0, "unit"), (255.0, "byte")):
        (tmp_path / name).mkdir()
        for i, layer in enumerate(stack):
            tifffile.imwrite(tmp_path / name / f"{i}.tif", layer.transpose(1, 2, 0) * scale, photometric="rgb")
    a, b = load_stack(tmp_path / "unit").images, load_stack(tmp_path / "byte").images
    np.testing.assert_allclose(a, b, atol=1e-6)  # not clipped to white
    assert "read as 0..255 data" in caplog.text  # and it says so


def test_int32_above_65535_is_scaled_not_saturated(tmp_path, caplog):
    rng = np.random.default_rng(0)
    raw = [(rng.random((20, 24)) * (2**20 - 1)).astype(np.int32) for _ in range(2)]
    for i, r in enumerate(raw):
        tifffile.imwrite(tmp_path / f"{i}.tif", r)
    st = load_stack(tmp_path)
    assert st.bit_depth == 16
    expected = np.rint(np.stack(raw).astype(np.float64) * (65535.0 / (2**20 - 1))) / 65535.0
    np.testing.assert_allclose(st.images[:, 0], expected, atol=1e-6)
    assert (st.images < 1.0).mean() > 0.99  # the old code saturated ~94 % of these pixels at 1.0
    assert "read as 20-bit data" in caplog.text


def _png_with_exif(src: Path, dst: Path, orientation: int) -> None:
    """Insert an ``eXIf`` chunk with ``orientation`` after IHDR of the PNG ``src``."""
    exif = Image.Exif()
    exif[274] = orientation
    data = exif.tobytes()
    if data.startswith(b"Exif\x00\x00"):
        data = data[6:]
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data) & 0xFFFFFFFF)
    raw = src.read_bytes()
    end_ihdr = 8 + 8 + 13 + 4
    dst.write_bytes(raw[:end_ihdr] + chunk + raw[end_ihdr:])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_for_tiff_and_16bit_png(tmp_path, orientation):
    rng = np.random.default_rng(orientation)
    img8 = (rng.random((5, 7, 3)) * 255).astype(np.uint8)
    ex = Image.Exif()
    ex[274] = orientation
    Image.fromarray(img8).save(tmp_path / "ref.png", exif=ex.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "ref.png")))  # what JPEG/8-bit PNG get

    tifffile.imwrite(tmp_path / "o.tif", img8, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    np.testing.assert_array_equal(read_image_file(tmp_path / "o.tif")[0][0], expected)

    img16 = img8.astype(np.uint16) * 257
    write_image(tmp_path / "plain16.png", img16)
    _png_with_exif(tmp_path / "plain16.png", tmp_path / "o16.png", orientation)
    got = read_image_file(tmp_path / "o16.png")[0][0]
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expected.astype(np.uint16) * 257)


# ---------------------------------------------------------------------------------------------- fuse-dataset
def test_fuse_dataset_keeps_going_reports_all_and_resumes(tmp_path, capfd):
    root = tmp_path / "bench"
    for k, scene in enumerate(("s1", "s2", "s3", "s4")):
        write_stack(root / "Toy" / "dof_stack" / scene, n=2, height=24, width=24, seed=k)
    (root / "Toy" / "dof_stack" / "s2" / "1.png").write_bytes(b"broken")
    (root / "Toy" / "dof_stack" / "s4" / "1.png").unlink()  # one layer only
    before = files_under(tmp_path)
    out = tmp_path / "fused"
    argv = ["fuse-dataset", str(root), "-o", str(out), *FM, "--no-progress"]
    capfd.readouterr()
    line = _one_error(capfd, main(argv), "2 of 4 scenes failed")
    assert "Toy/s2: cannot read" in line and "Toy/s4: a focal stack needs at least 2 layers" in line
    assert files_under(tmp_path) == before | {"fused/Toy/s1.png", "fused/Toy/s3.png"}
    s1 = (out / "Toy" / "s1.png").read_bytes()

    write_stack(root / "Toy" / "dof_stack" / "s2", n=2, height=24, width=24)  # the user mends s2 only
    line = _one_error(capfd, main(argv), "1 of 4 scenes failed")
    assert "s4" in line and "s2" not in line
    assert (out / "Toy" / "s1.png").read_bytes() == s1  # skipped, not redone
    write_stack(root / "Toy" / "dof_stack" / "s4", n=2, height=24, width=24)
    code = main([*argv, "--json"])
    captured = capfd.readouterr()
    assert code == 0 and captured.err == ""
    summary = json.loads(captured.out)
    assert [s.get("skipped", False) for s in summary] == [True, True, True, False]
    assert files_under(out) == {f"Toy/s{k}.png" for k in range(1, 5)}


def test_fuse_dataset_onto_a_file(tmp_path, capfd):
    write_stack(tmp_path / "bench" / "Toy" / "dof_stack" / "s1", n=2, height=24, width=24)
    (tmp_path / "f").write_text("x")
    code = main(["fuse-dataset", str(tmp_path / "bench"), "-o", str(tmp_path / "f"), *FM, "--no-progress"])
    _one_error(capfd, code, "is a file")


# --------------------------------------------------------------------------------------------------------- align
def test_align_overwrite_removes_its_stale_layers_and_refuses_a_file(tmp_path, capfd):
    write_stack(tmp_path / "st4", n=4)
    write_stack(tmp_path / "st3", n=3)
    out = tmp_path / "al"
    assert main(["align", str(tmp_path / "st4"), "-o", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    capfd.readouterr()
    assert main(["align", str(tmp_path / "st3"), "-o", str(out), "--overwrite"]) == 0
    assert files_under(out) == {"0.png", "1.png", "2.png", "transforms.json", "notes.txt"}
    assert json.loads((out / "transforms.json").read_text())["n_layers"] == 3
    capfd.readouterr()
    _one_error(capfd, main(["align", str(tmp_path / "st3"), "-o", str(out / "0.png")]), "is a file")
    _one_error(capfd, main(["align", str(tmp_path / "st3"), "-o", str(out)]), "exists; pass --overwrite")


# --------------------------------------------------------------------------------------------------------- train
TRAIN = ["--steps", "1", "--size", "32", "--n-range", "2", "2", "--epoch-size", "4", "--batch-size", "2"]
TRAIN += ["--val-count", "0", "--threads", "1", "--device", "cpu"]


def test_train_bad_arguments_fail_in_one_line(tmp_path, capfd):
    (tmp_path / "afile").write_text("x")
    _one_error(capfd, main(["train", "-o", str(tmp_path / "afile"), *TRAIN]), "is a file")
    _one_error(capfd, main(["train", "-o", str(tmp_path / "a"), *TRAIN, "--lr", "nan"]), "lr must be a positive")
    _one_error(capfd, main(["train", "-o", str(tmp_path / "a"), *TRAIN, "--grad-clip", "inf"]), "grad_clip")
    assert files_under(tmp_path) == {"afile"}


def test_train_resume_refuses_a_damaged_or_foreign_last_pt(tmp_path, capfd):
    out = tmp_path / "run"
    out.mkdir()
    (out / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    _one_error(capfd, main(["train", "-o", str(out), *TRAIN]), "the file is damaged")
    torch.save({"model": {}, "optimizer": {}, "step": 3, "train_config": {"model": "v3"}}, out / "last.pt")
    _one_error(capfd, main(["train", "-o", str(out), *TRAIN]), "was trained with --model v3, not v3_small")
    assert files_under(tmp_path) == {"run/last.pt"}


# -------------------------------------------------------------------------------------- warnings, -v, processes
def test_library_warnings_become_one_line_and_v_shows_detail(tmp_path, capfd):
    write_stack(tmp_path / "st")

    def noisy(*a, **k):
        np.log(np.zeros(3))  # numpy: RuntimeWarning divide by zero
        np.log(np.zeros(3) - 1)  # another RuntimeWarning, same kind of problem
        raise RuntimeError("boom")

    import stackmff.fusion.run as run

    orig = run.fuse_loaded
    run.fuse_loaded = noisy
    try:
        capfd.readouterr()
        code = main(["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM])
        err = capfd.readouterr().err
        lines = stderr_lines(err)
        assert code == 2 and "Traceback" not in err and len(lines) == 2, err
        assert lines[0].startswith("stackmff: warning: a numerical problem") and "-v" in lines[0]
        assert (
            lines[1] == "stackmff: error: unexpected RuntimeError: boom; rerun with -v for the traceback and report it"
        )
        code = main(["-v", "fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM])
        err = capfd.readouterr().err
        assert code == 2 and "Traceback" in err and "divide by zero" in err
    finally:
        run.fuse_loaded = orig


def _cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "stackmff", *args], cwd=ROOT, env=env, **kw)


@pytest.mark.slow
def test_broken_pipe_is_quiet(tmp_path):
    proc = _cli(["methods", "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.read(5)
    proc.stdout.close()  # `| head -c5`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141) and err == "", err


_SLOW_DISK = """
import sys, time
import stackmff.io as sio

def slow_write(self, final, data):  # a disk so slow that the signal arrives while the temp file is being written
    tmp = self.temp(final)
    tmp.write_bytes(bytes(data[:100]))
    print("writing", flush=True)
    time.sleep(120)

sio.OutputSet.write_bytes = slow_write
from stackmff.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_the_write_leaves_no_temp_and_no_output(tmp_path, sig):
    write_stack(tmp_path / "st")
    before = files_under(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = ["fuse", str(tmp_path / "st"), "-o", str(tmp_path / "out.png"), *FM, "--index-map", str(tmp_path / "m.png")]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_DISK, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().strip() == b"writing"
    assert any(p.name.endswith(".stackmff-tmp") for p in tmp_path.iterdir())  # the temp file is there now
    proc.send_signal(sig)
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 130
    assert stderr_lines(err) == ["stackmff: interrupted"], err
    assert files_under(tmp_path) == before  # the temp file is gone, nothing else appeared


def test_method_options_are_typed_from_the_signature():
    from stackmff.fusion import get_fusion_method

    fm = get_fusion_method("focus_measure")
    got = fm.check_options({"window": np.float32(2.5), "consistency": np.int64(3), "smooth_radius": None})
    assert got == {"window": 2.5, "consistency": 3, "smooth_radius": None} and type(got["consistency"]) is int
    for bad, says in (
        ({"window": "wide"}, "must be a number"),
        ({"consistency": 2.5}, "must be an integer"),
        ({"window": float("nan")}, "finite number"),
        ({"measure": "nope"}, "one of laplacian_energy, sml"),
        ({"windw": 2}, "has no option 'windw'"),
    ):
        with pytest.raises(Exception, match=says):
            fm.check_options(bad)
    v3 = get_fusion_method("stackmff_v3")
    assert v3.check_options({"weights": ROOT / "weights" / "stackmff_v3.pt", "device": "cpu"})["device"] == "cpu"
