"""The folders of dvc.yaml's ``vars: paths`` block are the only copy: the flows' paths equal what DVC resolves."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from pipelines.config import load_params
from pipelines.paths import load_paths
from stackmff.errors import StackMFFError

ROOT = Path(__file__).resolve().parents[2]


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


def test_flow_paths_are_the_paths_dvc_resolves():
    from dvc.repo import Repo

    paths = load_paths(ROOT)
    fuse = load_params(ROOT / "params.yaml", "fuse")
    with Repo(str(ROOT)) as repo:
        stages = {st.addressing: st for st in repo.index.stages}
    checked = 0
    families = (
        ("", fuse.methods),
        ("_learned", fuse.learned),
        ("_upstream", fuse.upstream),
        ("_imported", fuse.imported),
    )
    for family, methods in families:
        for base in methods:
            m = f"{base}_upstream" if family == "_upstream" else base
            for b in fuse.benchmarks:
                st = stages[f"fuse{family}@{base}-{b}"]
                assert [str(o.def_path) for o in st.outs] == [_rel(paths.fused_dir(m, b)), _rel(paths.runs_json(m, b))]
                words = shlex.split(st.cmd)
                assert _rel(paths.benchmark(b)) in words
                if family in ("_learned", "_upstream"):
                    assert words[words.index("--weights") + 1] == _rel(paths.model(base))
                if family == "_imported":
                    assert words[words.index("--imported") + 1] == _rel(paths.imported)
                ev = stages[f"evaluate{family}@{base}-{b}"]
                assert [str(o.def_path) for o in ev.outs] == [_rel(paths.metrics_csv(m, b))]
                assert shlex.split(ev.cmd)[-3:] == [_rel(paths.benchmark(b)), _rel(paths.fused_dir(m, b)),
                                                    _rel(paths.metrics_csv(m, b))]  # fmt: skip
                checked += 1
    report = stages["report"]
    assert shlex.split(report.cmd)[-5:] == [
        _rel(p) for p in (paths.metrics, paths.runs, paths.fused, paths.benchmarks, paths.reports)
    ]
    assert _rel(paths.reports / "index.html") in [str(o.def_path) for o in report.outs]
    assert [str(o.def_path) for o in stages["train@stackmff_v3"].outs] == [_rel(paths.models / "stackmff_v3")]
    assert checked >= 10


def test_flows_write_no_folder_names_of_their_own():
    """No flow spells a pipeline folder: they all come from load_paths."""
    folders = {str(v) for v in load_paths(ROOT).__dict__.values() if isinstance(v, Path) and v != ROOT}
    names = {Path(f).relative_to(ROOT).as_posix() for f in folders}
    for flow in sorted((ROOT / "pipelines" / "flows").glob("*.py")):
        text = flow.read_text(encoding="utf-8")
        spelled = [n for n in names if f'"{n}' in text or f"'{n}" in text]
        assert not spelled, f"{flow.name} spells {spelled}; use pipelines.paths.load_paths"


def test_a_data_root_without_dvc_yaml_has_the_project_layout(tmp_path):
    p = load_paths(tmp_path)
    assert p.fused_dir("m", "b") == tmp_path.resolve() / "data" / "fused" / "m" / "b"
    assert p.runs_json("m", "b") == tmp_path.resolve() / "reports" / "runs" / "m" / "b.json"


def test_a_dvc_yaml_without_the_block_is_refused(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    with pytest.raises(StackMFFError, match="no 'vars: - paths:' block"):
        load_paths(tmp_path)
    (tmp_path / "dvc.yaml").write_text("vars:\n  - paths: {fused: out}\nstages: {}\n")
    with pytest.raises(StackMFFError, match="vars paths lacks raw, extracted"):
        load_paths(tmp_path)
