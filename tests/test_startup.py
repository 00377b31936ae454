"""Start-up cost of the CLI: heavy libraries are imported only by the commands that use them.

`stackmff --help`, `stackmff methods` and a classical `fuse` used to import torch (2.6 s and 660 MB on every call).
These tests check the behaviour that keeps them cheap (which modules a fresh interpreter ends up with), not timings;
the timings are measured by ``pipelines/benchmarks/grid.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pandas", "piq", "matplotlib", "skimage", "transformers", "prefect", "dvc")


def _modules_after(code: str) -> set[str]:
    """Run ``code`` in a fresh interpreter (this checkout first on the path); the heavy modules it imported."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_cli_import_and_parser_do_not_import_torch():
    assert _modules_after("import stackmff.cli\nstackmff.cli.build_parser()") == set()


def test_help_and_methods_do_not_import_torch():
    code = (
        "import contextlib, io\nfrom stackmff.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "    assert main(['methods', '--json']) == 0\n"
    )
    assert _modules_after(code) == set()


def test_methods_lists_learned_methods_without_importing_torch():
    code = (
        "from stackmff.fusion import list_methods\n"
        "ms = {m.name: m.learned for m in list_methods()}\n"
        "assert ms['stackmff_v3'] is True and ms['focus_measure'] is False, ms\n"
    )
    assert _modules_after(code) == set()


def test_classical_fuse_does_not_import_torch(tmp_path):
    from _helpers import synthetic_stack, write_image

    stack, _, _ = synthetic_stack(3, height=48, width=64)
    for k, layer in enumerate(stack):
        write_image(tmp_path / f"{k}.png", (layer.transpose(1, 2, 0) * 255).round().astype("uint8"))
    out = tmp_path / "fused.png"
    code = f"from stackmff.cli import main\nassert main(['fuse', {str(tmp_path)!r}, '-o', {str(out)!r}, '-m', 'laplacian_pyramid']) == 0\n"
    assert _modules_after(code) == set()
    assert out.is_file()


@pytest.mark.slow
def test_learned_fuse_imports_torch(tmp_path):
    """The lazy registry entry still runs the network (the probe would be vacuous if torch never loaded)."""
    from _helpers import synthetic_stack, write_image

    stack, _, _ = synthetic_stack(3, height=64, width=64)
    for k, layer in enumerate(stack):
        write_image(tmp_path / f"{k}.png", (layer.transpose(1, 2, 0) * 255).round().astype("uint8"))
    out = tmp_path / "fused.png"
    code = (
        f"from stackmff.cli import main\n"
        f"assert main(['fuse', {str(tmp_path)!r}, '-o', {str(out)!r}, '--align', 'none', '--threads', '1']) == 0\n"
    )
    assert "torch" in _modules_after(code)
    assert out.is_file()


def test_train_help_still_lists_its_options():
    """`train`'s options are added when it is parsed (deferred: their defaults need torch)."""
    from stackmff.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "--steps", "7"])
    assert args.steps == 7 and args.func.__name__ == "_cmd_train"
    from stackmff.models.train import TrainConfig

    assert args.lr == TrainConfig().lr
