"""The application layer (stackmff.benchmark): one scene finder, one fuse_tree, used by the CLI and the stages."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from _helpers import synthetic_stack, write_image

import stackmff.fusion.run as fusion_run
from pipelines.config import FuseParams
from pipelines.stages import fuse as fuse_stage
from stackmff.benchmark import PeakMemory, Scene, find_scenes, fuse_tree, is_benchmark_tree, raise_for_failures
from stackmff.cli import main
from stackmff.errors import PartialFailure, StackMFFError


def _rgb(h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_stack(folder, n=3, h=40, w=48, seed=0):
    stack, _, _ = synthetic_stack(n, height=h, width=w, seed=seed)
    for i, layer in enumerate(stack):
        write_image(folder / f"{i}.png", np.rint(layer.transpose(1, 2, 0) * 255).astype(np.uint8))
    return folder


def test_find_scenes_stacks_then_pairs_with_ground_truth(tmp_path, caplog):
    for ds, sub in (("MobileDepth", "dof_stack"), ("Middlebury", "image stack")):
        for scene in ("s2", "s10"):
            for i in range(2):
                write_image(tmp_path / ds / sub / scene / f"{i}.png", _rgb())
    write_image(tmp_path / "MobileDepth" / "AiF" / "s10.png", _rgb())
    for name in ("p1", "p2"):
        write_image(tmp_path / "Lytro" / "A" / f"{name}.png", _rgb())
        write_image(tmp_path / "Lytro" / "B" / f"{name}.png", _rgb())
    write_image(tmp_path / "MFFW" / "A" / "x-A.png", _rgb())
    write_image(tmp_path / "MFFW" / "B" / "x-B.png", _rgb())
    with caplog.at_level(logging.WARNING, logger="stackmff"):
        scenes = find_scenes(tmp_path)
    assert [(s.kind, s.name) for s in scenes] == [
        ("stack", "Middlebury/s2"),
        ("stack", "Middlebury/s10"),
        ("stack", "MobileDepth/s2"),
        ("stack", "MobileDepth/s10"),
        ("pair", "Lytro/p1"),
        ("pair", "Lytro/p2"),
        ("pair", "MFFW/x-A"),
    ]
    assert "sorted order" in caplog.text  # MFFW's names differ: paired by order, said so
    by = {s.name: s for s in scenes}
    assert by["MobileDepth/s10"].ground_truth.name == "s10.png" and by["MobileDepth/s2"].ground_truth is None
    assert by["MFFW/x-A"].inputs[1].name == "x-B.png"
    assert by["Middlebury/s2"].inputs == (tmp_path / "Middlebury" / "image stack" / "s2",)
    assert by["Lytro/p1"].output(tmp_path / "o", ".tif") == tmp_path / "o" / "Lytro" / "p1.tif"
    # a dataset of either kind can be requested; the other kind's absence is not an error
    assert [s.name for s in find_scenes(tmp_path, ["Lytro", "Middlebury"])] == [
        "Middlebury/s2",
        "Middlebury/s10",
        "Lytro/p1",
        "Lytro/p2",
    ]
    assert [s.kind for s in find_scenes(tmp_path, kinds=("pair",))] == ["pair"] * 3
    with pytest.raises(StackMFFError, match=r"dataset\(s\) not found under .*: Nope; available: Middlebury, Mob"):
        find_scenes(tmp_path, ["Nope"])
    with pytest.raises(StackMFFError, match=r"no image pairs found under .*expected <root>/<dataset>/A/ and B/"):
        find_scenes(tmp_path / "Middlebury", kinds=("pair",))
    with pytest.raises(StackMFFError, match="no focal stacks or image pairs found"):
        find_scenes(tmp_path / "MobileDepth" / "AiF")
    with pytest.raises(StackMFFError, match="dataset root not found"):
        find_scenes(tmp_path / "missing")
    with pytest.raises(StackMFFError, match="unknown scene kind"):
        find_scenes(tmp_path, kinds=("video",))
    assert is_benchmark_tree(tmp_path) and is_benchmark_tree(tmp_path / "Lytro")
    assert not is_benchmark_tree(tmp_path / "Lytro" / "A") and not is_benchmark_tree(tmp_path / "missing")


def test_unequal_pair_folders_are_refused(tmp_path):
    write_image(tmp_path / "MFFW" / "A" / "a.png", _rgb())
    write_image(tmp_path / "MFFW" / "A" / "b.png", _rgb())
    write_image(tmp_path / "MFFW" / "B" / "a.png", _rgb())
    with pytest.raises(StackMFFError, match="A has 2 images and B has 1"):
        find_scenes(tmp_path)


@pytest.fixture
def bench(tmp_path):
    for k, scene in enumerate(("s1", "s2", "s3")):
        _write_stack(tmp_path / "bench" / "Toy" / "dof_stack" / scene, seed=k)
    return tmp_path / "bench"


def test_fuse_tree_records_resumes_and_keeps_going(bench, tmp_path):
    (bench / "Toy" / "dof_stack" / "s2" / "1.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    run = fuse_tree(bench, out, "focus_measure", index_maps=True)
    assert run["status"] == "partial" and run["kind"] == "registered" and run["benchmark"] == "bench"
    ok, bad, ok3 = run["scenes"]
    assert (ok["status"], bad["status"], ok3["status"]) == ("ok", "failed", "ok")
    assert "cannot read" in bad["error"] and bad["seconds"] is None
    # the record is the `stackmff fuse` summary plus scene, status and the peak memory of the whole scene
    assert ok["layers"] == 3 and (ok["height"], ok["width"]) == (40, 48) and ok["peak_mb"] >= 0
    assert ok["seconds"] >= ok["load_seconds"] + ok["fuse_seconds"] > 0
    assert ok["outputs"] == [
        str(out / "Toy" / "s1.png"),
        *(str(out / "Toy" / "index_maps" / f) for f in ("s1.png", "s1_preview.png")),
    ]
    with pytest.raises(PartialFailure, match=r"1 of 3 scenes failed \(Toy/s2: cannot read") as info:
        raise_for_failures(run)
    assert [r["status"] for r in info.value.results] == ["ok", "failed", "ok"]
    before = (out / "Toy" / "s1.png").stat().st_mtime_ns
    _write_stack(bench / "Toy" / "dof_stack" / "s2", seed=1)  # mended: a rerun fuses only s2
    again = fuse_tree(bench, out, "focus_measure")
    assert [r["status"] for r in again["scenes"]] == ["skipped", "ok", "skipped"] and again["status"] == "ok"
    assert (out / "Toy" / "s1.png").stat().st_mtime_ns == before
    raise_for_failures(again)  # nothing failed: no error


def test_fuse_tree_checks_before_any_scene(bench, tmp_path):
    with pytest.raises(StackMFFError, match="unknown method"):
        fuse_tree(bench, tmp_path / "o", "no_such_method")
    with pytest.raises(StackMFFError, match="--ext must be an image extension"):
        fuse_tree(bench, tmp_path / "o", "focus_measure", ext=".txt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StackMFFError, match="is a file"):
        fuse_tree(bench, tmp_path / "file", "focus_measure")
    with pytest.raises(StackMFFError):
        fuse_tree(bench, tmp_path / "o", "focus_measure", method_options={"no_such_option": 1})
    assert not (tmp_path / "o").exists()


def test_cli_stage_and_library_give_the_same_image_and_stacks_load_compact(bench, tmp_path, monkeypatch):
    """The DVC stage, ``fuse-dataset`` and ``fuse`` run one code path: the same bytes, every stack compact."""
    loads = []
    real = fusion_run.load_stack

    def spy(files, **kw):
        loads.append(kw.get("compact", False))
        return real(files, **kw)

    monkeypatch.setattr(fusion_run, "load_stack", spy)
    scene = bench / "Toy" / "dof_stack" / "s1"
    for method in ("focus_measure", "stackmff_v3"):
        loads.clear()
        assert main(["fuse", str(scene), "-o", str(tmp_path / f"{method}.png"), "-m", method, "--align", "none"]) == 0
        cli_dataset = tmp_path / f"ds_{method}"
        assert main(["fuse-dataset", str(bench), "-o", str(cli_dataset), "-m", method, "--align", "none",
                     "--no-progress"]) == 0  # fmt: skip
        stage = tmp_path / f"stage_{method}"
        s = fuse_stage.run(FuseParams(), method, bench, stage, tmp_path / f"{method}.json")
        assert s["status"] == "ok" and s["kind"] == ("learned" if method == "stackmff_v3" else "registered")
        one = (tmp_path / f"{method}.png").read_bytes()
        assert (cli_dataset / "Toy" / "s1.png").read_bytes() == one == (stage / "Toy" / "s1.png").read_bytes()
        assert set(loads) == {True} and len(loads) == 1 + 3 + 3  # every method reads 8/16-bit layers
        on_disk = json.loads((tmp_path / f"{method}.json").read_text())
        assert [r["scene"] for r in on_disk["scenes"]] == ["s1", "s2", "s3"]


def test_scene_is_a_value():
    a = Scene("d", "s", "stack", ())
    assert a == Scene("d", "s", "stack", ()) and a.name == "d/s"


def test_peak_memory_sees_an_allocation():
    with PeakMemory() as mem:
        block = np.ones(96 * 2**20, np.uint8)
    assert block[-1] == 1 and 90 <= mem.peak_mb < 1000
