"""Prefect flows: task logic via .fn(), and whole flows against a real local Prefect server (slow)."""

from __future__ import annotations

import json
import shutil
import textwrap

import numpy as np
import pytest

from pipelines.config import BaseParams, FuseParams, SplitParams, SynthesizeParams
from pipelines.flows import benchmark as bflow
from pipelines.flows import regenerate as rflow
from pipelines.stages import synthesize
from stackmff.io import save_image


@pytest.fixture
def tree(tmp_path):
    """A repository-shaped root: data/benchmarks/synthetic and a params file with two methods."""
    sp = SynthesizeParams(benchmark=SplitParams(scenes=2, size=32, layers=[3, 4], datasets={"proc": 0}))
    synthesize.run(sp, BaseParams(), "benchmark", tmp_path / "d", tmp_path / "data" / "benchmarks" / "synthetic")
    (tmp_path / "params.yaml").write_text(
        textwrap.dedent("""
        fuse: {methods: [focus_measure, focus_stack], imported: [zerene_pmax], benchmarks: [synthetic]}
        evaluate: {metrics: [psnr, qabf]}
        report: {metrics: [psnr, qabf], max_scenes: 2}
        flows: {task_runner: threads, workers: 2}
    """)
    )
    return tmp_path


def test_fuse_task_fn(tree):
    runs = bflow.fuse.fn(FuseParams(), "focus_measure", "synthetic", str(tree), kind="registered")
    assert runs.endswith("reports/runs/focus_measure/synthetic.json")
    assert (tree / "data" / "fused" / "focus_measure" / "synthetic" / "proc" / "0001.png").is_file()


@pytest.mark.slow
def test_publish_task_fn_copies_report(tmp_path, prefect_server):
    (tmp_path / "reports" / "tables").mkdir(parents=True)
    (tmp_path / "reports" / "index.html").write_text("<html></html>")
    (tmp_path / "reports" / "tables" / "quality.md").write_text("| a |")
    out = rflow.publish.fn(str(tmp_path), str(tmp_path / "pub"))
    assert (tmp_path / "pub" / "index.html").read_text() == "<html></html>"
    assert (tmp_path / "pub" / "tables" / "quality.md").is_file() and out.endswith("index.html")


@pytest.mark.slow
def test_benchmark_flow_on_real_server(tree, prefect_server, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # focus_stack absent on purpose
    result = bflow.benchmark(params_file=str(tree / "params.yaml"), root=str(tree))
    text = (tree / "reports" / "index.html").read_text()
    assert result["report"] == str((tree / "reports" / "index.html").resolve())
    assert "focus_stack" in text and "absent" in text
    # structured result: headline numbers as in the DVC metrics files, per-method status and timing
    fm = json.loads((tree / "reports" / "summary" / "proc" / "focus_measure.json").read_text())
    assert result["headline"]["proc"]["focus_measure"] == fm and set(fm) == {"psnr"}
    assert result["methods"]["focus_measure"]["synthetic"]["status"] == "ok"
    assert result["methods"]["focus_measure"]["synthetic"]["stacks"] == 2
    assert result["methods"]["focus_measure"]["synthetic"]["seconds_per_stack"] > 0
    assert result["methods"]["focus_stack"]["synthetic"]["status"] == "absent"
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as c:
            runs = await c.read_task_runs()
            arts = await c.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=KEYS)))
            logs = await c.read_logs()
            return {r.name for r in runs}, {a.key: a for a in arts}, [lg.message for lg in logs]

    import asyncio

    KEYS = ["benchmark-headline", "benchmark-report"]
    names, arts, logs = asyncio.run(read())
    assert {"fuse focus_measure on synthetic", "evaluate focus_measure on synthetic", "report"} <= names
    assert set(arts) == set(KEYS)
    table = arts["benchmark-headline"].data
    table = json.loads(table) if isinstance(table, str) else table
    row = next(r for r in table if r["method"] == "focus_measure" and r["dataset"] == "proc")
    assert row["psnr"] == fm["psnr"]
    assert (tree / "reports" / "index.html").resolve().as_uri() in arts["benchmark-report"].data
    assert any(m.startswith("fuse focus_measure on synthetic: 2 stacks,") and "s/stack" in m for m in logs)
    assert any(m.startswith("fuse focus_stack on synthetic: absent, no stack fused") for m in logs)
    assert any(m.startswith("evaluate focus_measure on synthetic: ") for m in logs)


@pytest.mark.slow
def test_regenerate_flow_runs_dvc_and_publishes(tmp_path, prefect_server):
    """A scheduled-deployment stand-in: the regenerate flow on a tiny DVC project (one stage)."""
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    import subprocess
    import sys
    from pathlib import Path

    dvc = str(Path(sys.executable).with_name("dvc"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([dvc, "init", "-q"], cwd=tmp_path, check=True)
    img = np.zeros((3, 8, 8), np.float32)
    save_image(tmp_path / "x.png", img)
    (tmp_path / "params.yaml").write_text(f"flows: {{publish_dir: {tmp_path / 'pub'}}}\n")
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n  report:\n    cmd: mkdir -p reports/tables && cp x.png reports/index.html"
        " && echo '| m |' > reports/tables/quality.md\n    deps: [x.png]\n    outs: [reports]\n"
    )
    out = rflow.regenerate(root=str(tmp_path))
    assert out == str(tmp_path / "pub" / "index.html") and (tmp_path / "pub" / "index.html").is_file()
    # a second run is a no-op for DVC
    assert "up to date" in rflow.dvc.fn(["status"], str(tmp_path))
    from prefect.client.orchestration import get_client

    async def names():
        async with get_client() as c:
            return {r.name for r in await c.read_task_runs()}

    import asyncio

    assert "dvc repro" in asyncio.run(names())  # readable task name: the DVC command line
