"""Flow ``regenerate``: run ``dvc repro`` (which re-runs only what changed) and publish the report.

Publishing = a Prefect Markdown artifact with the quality tables (visible in the UI) and, when
``flows.publish_dir`` is set, a copy of ``reports/index.html``, ``tables/`` and ``plots/`` there.

Serve it on a cron schedule (a long-running process; see pipelines/README.md)::

    python -m pipelines.flows.regenerate --serve
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from pipelines.config import load_params
from pipelines.paths import load_paths
from stackmff.errors import StackMFFError

DEPLOYMENT = "regenerate-nightly"


def _dvc_run_name() -> str:
    from prefect.runtime import task_run

    return " ".join(["dvc", *task_run.parameters.get("args", [])])


@task(task_run_name=_dvc_run_name, timeout_seconds=4 * 3600)
def dvc(args: list[str], root: str) -> str:
    """Run a DVC command in ``root``; returns its output (raises with the tail of it on failure).

    The stage commands of ``dvc.yaml`` call ``python``: this interpreter's folder goes first on ``PATH`` so that they
    run in the environment the flow runs in (a worker started from a virtualenv without activating it).
    """
    exe = Path(sys.executable).with_name("dvc")
    cmd = [str(exe) if exe.exists() else "dvc", *args]
    env = dict(os.environ, PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, check=False, env=env)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise StackMFFError(f"{' '.join(cmd)} failed (exit {proc.returncode}): {out[-800:]}")
    return out


@task(retries=3, retry_delay_seconds=[2, 10, 30], task_run_name="publish report")
def publish(root: str, publish_dir: str) -> str:
    """Publish the report (artifact + optional copy); retried because the target may be a network share."""
    reports = load_paths(root).reports
    md = reports / "tables" / "quality.md"
    resources = reports / "tables" / "resources.md"
    text = md.read_text(encoding="utf-8") if md.is_file() else "(no quality table)"
    if resources.is_file():
        text += "\n## Runtime and memory\n\n" + resources.read_text(encoding="utf-8")
    create_markdown_artifact(key="benchmark-report", markdown=text, description="StackMFF benchmark tables")
    if not publish_dir:
        return str(reports / "index.html")
    dst = Path(publish_dir)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(reports / "index.html", dst / "index.html")
    for sub in ("tables", "plots"):
        if (reports / sub).is_dir():
            shutil.copytree(reports / sub, dst / sub, dirs_exist_ok=True)
    return str(dst / "index.html")


@flow(name="regenerate", log_prints=True)
def regenerate(root: str = ".", params_file: str = "params.yaml", targets: list[str] | None = None) -> str:
    """``dvc repro [targets]`` in ``root`` and publish the report; returns where the HTML page is."""
    out = dvc(["repro", *(targets or [])], root)
    print(out[-2000:])
    fl = load_params(Path(root) / params_file, "flows")
    return publish(root, fl.publish_dir)


if __name__ == "__main__":
    if "--serve" in sys.argv:
        cron = load_params("params.yaml", "flows").cron
        regenerate.serve(name=DEPLOYMENT, cron=cron, pause_on_shutdown=False)
    else:
        regenerate()
