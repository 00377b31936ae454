"""The hostile-input corpus of issue #15 as a test suite: every case runs the real CLI on generated inputs and asserts
the exit code, exactly the expected stderr line(s) (``stackmff: error: ...`` and no traceback) and the exact set of
files afterwards (nothing partial, no temp file, nothing of the user's replaced).

In-process cases capture file descriptor 2 (``capfd``), so messages printed by C libraries (libpng) count too.
Cases that need a real process (signals, a closed pipe) are marked slow.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from _helpers import synthetic_stack, write_image

from stackmff.cli import main

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _to8(img_chw: np.ndarray) -> np.ndarray:
    return np.rint(np.clip(img_chw, 0, 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def write_stack(folder: Path, n: int = 3, *, height: int = 40, width: int = 48, seed: int = 0) -> Path:
    stack, _, _ = synthetic_stack(n, height=height, width=width, seed=seed)
    for i, layer in enumerate(stack):
        write_image(folder / f"{i}.png", _to8(layer))
    return folder


def png_header_only(path: Path, width: int, height: int, bit_depth: int = 8) -> Path:
    """A PNG whose IHDR claims ``width x height`` RGB pixels followed by a tiny IDAT (a decompression bomb's head)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )
    return path


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def stderr_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


@dataclass
class Case:
    """One corpus entry: ``setup(tmp)`` writes the inputs and returns the argv; the run must exit with ``rc``, print
    ``lines`` stderr lines, the first containing ``says``, and leave exactly the input files plus ``new``."""

    id: str
    setup: Callable[[Path], list[str]]
    rc: int
    says: str
    new: set[str] = field(default_factory=set)
    lines: int = 1
    skip: str | None = None


def _fuse(*extra: str, out: str = "out.png", src: str = "st") -> Callable[[Path], list[str]]:
    def setup(tmp: Path) -> list[str]:
        write_stack(tmp / "st")
        return ["fuse", str(tmp / src), "-o", str(tmp / out) if not out.startswith("/") else out, *extra]

    return setup


def _with(prepare: Callable[[Path], None], setup: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
    def both(tmp: Path) -> list[str]:
        argv = setup(tmp)
        prepare(tmp)
        return argv

    return both


def _corrupt_weights(tmp: Path) -> None:
    (tmp / "bad.pt").write_bytes(b"\x80\x02not a checkpoint at all")


def _bomb(tmp: Path) -> None:
    png_header_only(tmp / "st" / "1.png", 60000, 60000)


def _bomb16(tmp: Path) -> None:
    png_header_only(tmp / "st" / "1.png", 60000, 60000, bit_depth=16)


def _truncated16(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        write_image(tmp / "st" / f"{i}.png", (rng.random((40, 48, 3)) * 65535).astype(np.uint16))
    data = (tmp / "st" / "1.png").read_bytes()
    (tmp / "st" / "1.png").write_bytes(data[: len(data) // 2])


def _nan_tiff(tmp: Path) -> None:
    for p in (tmp / "st").iterdir():
        p.unlink()
    stack, _, _ = synthetic_stack(3, height=40, width=48)
    for i, layer in enumerate(stack):
        arr = layer.transpose(1, 2, 0).copy()
        if i == 1:
            arr[5:9, 5:9] = np.nan
        tifffile.imwrite(tmp / "st" / f"{i}.tif", arr, photometric="rgb")


def _float255_tiff(tmp: Path) -> None:
    for p in (tmp / "st").iterdir():
        p.unlink()
    stack, _, _ = synthetic_stack(3, height=40, width=48)
    for i, layer in enumerate(stack):
        tifffile.imwrite(tmp / "st" / f"{i}.tif", layer.transpose(1, 2, 0) * 255.0, photometric="rgb")


def _truncated_tiff(tmp: Path) -> None:
    for p in (tmp / "st").iterdir():
        p.unlink()
    rng = np.random.default_rng(0)
    for i in range(3):
        tifffile.imwrite(tmp / "st" / f"{i}.tif", (rng.random((64, 64, 3)) * 255).astype(np.uint8), photometric="rgb")
    data = (tmp / "st" / "1.tif").read_bytes()
    (tmp / "st" / "1.tif").write_bytes(data[: len(data) // 2])


def _tiny(tmp: Path) -> None:
    rng = np.random.default_rng(0)
    for p in (tmp / "st").iterdir():
        p.unlink()
    for i in range(3):
        write_image(tmp / "st" / f"{i}.png", (rng.random((2, 2, 3)) * 255).astype(np.uint8))


def _make(path: str, content: bytes = b"keep me") -> Callable[[Path], None]:
    def prepare(tmp: Path) -> None:
        (tmp / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp / path).write_bytes(content)

    return prepare


def _mkdir(path: str) -> Callable[[Path], None]:
    return lambda tmp: (tmp / path).mkdir(parents=True, exist_ok=True)


def _chmod(path: str, mode: int) -> Callable[[Path], None]:
    return lambda tmp: (tmp / path).chmod(mode)


FM = ("-m", "focus_measure", "--align", "none")

CASES = [
    # -O options, checked against the method's signature before anything is loaded
    Case("opt-unknown", _fuse("-O", "foo=1"), 2, "has no option 'foo'"),
    Case("opt-no-equals", _fuse("-O", "foo"), 2, "KEY=VALUE"),
    Case("opt-not-int", _fuse("-O", "tile=abc"), 2, "option tile of stackmff_v3 must be an integer"),
    Case("opt-bad-yaml", _fuse("-O", "gather=[1"), 2, "cannot read the value of -O"),
    Case("opt-not-bool", _fuse("-O", "half_res=notabool"), 2, "must be true/false"),
    Case("opt-negative", _fuse(*FM, "-O", "window=-3"), 2, "must be a finite number >= 0"),
    Case("opt-bad-choice", _fuse(*FM, "-O", "measure=foo"), 2, "measure must be one of"),
    Case("opt-gather-choice", _fuse("-O", "gather=best"), 2, "gather must be one of"),
    # learned-method flags
    Case("device-with-classical", _fuse(*FM, "--device", "cpu"), 2, "--device applies to the learned methods only"),
    Case("weights-with-classical", _fuse(*FM, "--weights", "x.pt"), 2, "--weights applies to the learned"),
    Case("budget-with-classical", _fuse(*FM, "--memory-budget", "512"), 2, "--memory-budget applies to the learned"),
    Case("device-unknown", _fuse("--device", "tpu9"), 2, "unknown device 'tpu9'"),
    Case(
        "device-cuda-absent",
        _fuse("--device", "cuda"),
        2,
        "CUDA is not available",
        skip="CUDA is available here" if torch.cuda.is_available() else None,
    ),
    Case("budget-zero", _fuse("--memory-budget", "0"), 2, "--memory-budget: must be > 0"),
    Case("budget-too-small", _fuse("--memory-budget", "10"), 2, "memory budget must be >= 64"),
    Case("budget-not-number", _fuse("--memory-budget", "lots"), 2, "expected a whole number"),
    Case("align-reference-negative", _fuse("--align-reference", "-1"), 2, "layer index >= 0"),
    Case("weights-missing", _fuse("--weights", "nothere.pt"), 2, "not found"),
    Case("weights-corrupt", _with(_corrupt_weights, _fuse("--weights", "REPLACE")), 2, "cannot read weights"),
    Case("method-unknown", _fuse("-m", "nope"), 2, "unknown method 'nope'"),
    Case("transforms-missing", _fuse(*FM[:2], "--transforms", "nothere.json"), 2, "nothere.json does not exist"),
    Case(
        "transforms-malformed",
        _with(_make("t.json", b"{not json"), _fuse(*FM[:2], "--transforms", "T")),
        2,
        "t.json",
    ),
    # output paths
    Case("ext-unsupported", _fuse(*FM, out="out.gif"), 2, "unknown extension .gif"),
    Case("ext-none", _fuse(*FM, out="out"), 2, "unknown extension (none)"),
    Case("out-under-proc", _fuse(*FM, out="/proc/stackmff/out.png"), 2, "cannot write output /proc/stackmff/out.png"),
    Case("out-parent-is-file", _fuse(*FM, out="st/0.png/out.png"), 2, "is a file, not a folder"),
    Case("out-is-folder", _with(_mkdir("outdir"), _fuse(*FM, "--overwrite", out="outdir")), 2, "is a folder"),
    Case("out-is-input", _fuse(*FM, "--overwrite", out="st/0.png"), 2, "is one of the inputs"),
    Case("out-exists", _with(_make("out.png"), _fuse(*FM)), 2, "exists; pass --overwrite"),
    Case("imap-equals-out", _fuse(*FM, "--index-map", "SELF"), 2, "two outputs are both"),
    Case("imap-unwritable", _fuse(*FM, "--index-map", "/proc/stackmff/map.png"), 2, "cannot write output /proc"),
    Case(
        "transforms-exists",
        _with(_make("t.json", b"{}"), _fuse("-m", "focus_measure", "--save-transforms", "T")),
        2,
        "t.json exists; pass --overwrite",
    ),
    Case(
        "out-readonly-folder",
        _with(_chmod("ro", 0o555), _with(_mkdir("ro"), _fuse(*FM, out="ro/out.png"))),
        2,
        "does not accept new files",
        skip="root writes into read-only folders" if IS_ROOT else None,
    ),
    Case(
        "input-unreadable-folder",
        _with(_chmod("st", 0o000), _fuse(*FM)),
        2,
        "permission denied",
        skip="root reads unreadable folders" if IS_ROOT else None,
    ),
    # inputs
    Case("empty-folder", _with(lambda t: [p.unlink() for p in (t / "st").iterdir()], _fuse(*FM)), 2, "no images found"),
    Case("png-bomb-8bit", _with(_bomb, _fuse(*FM)), 2, "claims 60000x60000 pixels"),
    Case("png-bomb-16bit", _with(_bomb16, _fuse(*FM)), 2, "claims 60000x60000 pixels"),
    Case("png16-truncated", _with(_truncated16, _fuse(*FM)), 2, "cannot read"),
    Case("float-tiff-nan", _with(_nan_tiff, _fuse(*FM)), 2, "1.tif has 48 NaN or infinite pixel(s)"),
    Case(
        "float-tiff-0-255",
        _with(_float255_tiff, _fuse(*FM)),
        0,
        "float layers hold values up to",
        new={"out.png"},
        lines=2,
    ),
    Case("tiff-truncated", _with(_truncated_tiff, _fuse(*FM)), 2, "cannot read"),
    Case("png-not-an-image", _with(_make("st/1.png", b"not an image"), _fuse(*FM)), 2, "cannot read"),
    Case("tiny-2x2-classical", _with(_tiny, _fuse(*FM)), 0, "wrote", new={"out.png"}),
    Case(
        "tiny-2x2-default-method",
        _with(_tiny, _fuse("--align", "none")),
        0,
        "stackmff: warning: a numerical problem",  # numpy's RuntimeWarnings: one line of ours, then "wrote"
        new={"out.png"},
        lines=2,
    ),
    # other commands
    Case(
        "align-onto-file",
        _with(_make("f"), lambda t: ["align", str(write_stack(t / "st")), "-o", str(t / "f")]),
        2,
        "is a file",
    ),
    Case(
        "align-bad-ext",
        lambda t: ["align", str(write_stack(t / "st")), "-o", str(t / "al"), "--ext", "gif"],
        2,
        "--ext must be an image extension",
    ),
    Case(
        "fuse-dataset-bad-ext",
        lambda t: [
            "fuse-dataset",
            str(write_stack(t / "b" / "D" / "dof_stack" / "s", n=2).parents[2]),
            "-o",
            str(t / "o"),
            "--ext",
            ".gif",
            "--no-progress",
            *FM,
        ],
        2,
        "--ext must be an image extension",
    ),
    Case(
        "evaluate-table-onto-folder",
        _with(_mkdir("tbl.csv"), lambda t: ["evaluate", str(t), "--benchmark", str(t), "--method", "x", "-o", "TBL"]),
        2,
        "is a folder",
    ),
    Case("train-onto-file", _with(_make("f"), lambda t: ["train", "-o", str(t / "f")]), 2, "is a file"),
    Case("train-lr-nan", lambda t: ["train", "-o", str(t / "r"), "--lr", "nan"], 2, "lr must be a positive number"),
    Case("ok-classical", _fuse(*FM), 0, "wrote", new={"out.png"}),
    Case(
        "ok-index-map-and-transforms",
        _fuse("-m", "focus_measure", "--index-map", "m.png", "--save-transforms", "T"),
        0,
        "wrote",
        new={"out.png", "m.png", "m_preview.png", "t.json"},
    ),
    Case(
        "transforms-overwrite",
        _with(_make("t.json", b"{}"), _fuse("-m", "focus_measure", "--save-transforms", "T", "--overwrite")),
        0,
        "wrote",
        new={"out.png"},  # t.json existed (an input of the case) and is replaced
    ),
]


def _resolve(argv: list[str], tmp: Path) -> list[str]:
    out = argv[argv.index("-o") + 1] if "-o" in argv else ""
    subs = {"SELF": out, "REPLACE": str(tmp / "bad.pt"), "T": str(tmp / "t.json"), "TBL": str(tmp / "tbl.csv")}
    resolved = [subs.get(a, a) for a in argv]
    for flag in ("--index-map", "--weights"):
        if flag in resolved:
            k = resolved.index(flag) + 1
            if not resolved[k].startswith("/"):
                resolved[k] = str(tmp / resolved[k])
    return resolved


def run_case(case: Case, tmp: Path, capfd) -> tuple[int, list[str]]:
    argv = _resolve(case.setup(tmp), tmp)
    before = files_under(tmp) if os.access(tmp / "st", os.R_OK | os.X_OK) or not (tmp / "st").exists() else None
    capfd.readouterr()
    try:
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors (one line, exit 2)
            code = exc.code
    finally:
        for p in (tmp / "st", tmp / "ro"):
            if p.exists():
                p.chmod(0o755)
    err = capfd.readouterr().err
    lines = stderr_lines(err)
    assert code == case.rc, err
    assert "Traceback" not in err, err
    assert len(lines) == case.lines, err
    assert case.says in err, err
    if case.rc == 2:
        assert re.match(r"stackmff( [a-z-]+)?: error: ", lines[-1]), err
    if before is None:
        before = files_under(tmp)
    assert files_under(tmp) == before | case.new, (sorted(files_under(tmp)), sorted(before | case.new))
    return code, lines


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus(case: Case, tmp_path, capfd):
    if case.skip:
        pytest.skip(case.skip)
    run_case(case, tmp_path, capfd)
