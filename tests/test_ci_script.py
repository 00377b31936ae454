"""`.ci/run`: it runs the README's test command, and any failing step (install, tests, lint) fails CI."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    block = ROOT.joinpath("README.md").read_text().split("```", 2)[1]  # the two commands at the top
    return next(line for line in block.splitlines() if "pytest" in line).strip()


def test_ci_runs_the_readme_test_command():
    assert _readme_test_command() in ROOT.joinpath(".ci", "run").read_text()


def _exe(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(
    ("failing", "ran"),
    [("pip", []), ("pytest", ["pytest"]), ("ruff", ["pytest", "ruff"]), (None, ["pytest", "ruff", "ruff"])],
)
def test_a_failing_step_fails_ci(tmp_path, failing, ran):
    # a copy of the script in a fake checkout whose python3.11 makes a .venv of stand-in tools that log their runs
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / ".ci", repo / ".ci")
    log = tmp_path / "ran.log"
    tool = 'echo {name} >> "{log}"; exit {code}'
    venv = "\n".join(
        f"cat > .venv/bin/{name} <<'EOF'\n#!/bin/sh\n{tool.format(name=name, log=log, code=int(name == failing))}\nEOF\n"
        f"chmod +x .venv/bin/{name}"
        for name in ("pip", "pytest", "ruff")
    )
    bin_dir = tmp_path / "bin"
    _exe(bin_dir / "python3.11", f"mkdir -p .venv/bin\n{venv}")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CI": "true"}
    r = subprocess.run(["bash", str(repo / ".ci" / "run")], cwd=tmp_path, env=env, capture_output=True, text=True)
    runs = log.read_text().split() if log.exists() else []
    assert [x for x in runs if x != "pip"] == ran, (r.stdout, r.stderr)
    assert (r.returncode != 0) == (failing is not None), (r.returncode, r.stderr)
