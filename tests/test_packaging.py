"""Packaging: every third-party import is declared in pyproject.toml, and the library keeps its extras lazy.

``pip install stackmff`` (the core) must fuse, evaluate and report; the research pipeline (DVC, Prefect, Dask,
dvclive) and Depth Anything (transformers) are the ``[pipeline]`` and ``[depth]`` extras. So a module of the
library may import an extra only inside a function (and turn its absence into a one-line StackMFFError).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib", reason="reads pyproject.toml with Python 3.11's tomllib")

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
# import name -> distribution name, where they differ
DIST = {
    "cv2": "opencv-python-headless",
    "PIL": "pillow",
    "yaml": "pyyaml",
    "pywt": "pywavelets",
    "skimage": "scikit-image",
    "ruamel": "ruamel.yaml",
    "prefect_dask": "prefect-dask",
}
# the project's packages and the test modules (which import each other by file name)
FIRST_PARTY = {"stackmff", "metrics", "pipelines", "tests"} | {p.stem for p in (ROOT / "tests").rglob("*.py")}


def _dist(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower()


CORE = {_dist(r) for r in PYPROJECT["dependencies"]}
EXTRAS = {name: {_dist(r) for r in reqs} for name, reqs in PYPROJECT["optional-dependencies"].items()}
DECLARED = CORE | set().union(*EXTRAS.values())


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level package, imported at module level) for every absolute import of a file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    module_level = {id(n) for n in tree.body} | {
        id(c) for n in tree.body if isinstance(n, (ast.If, ast.Try)) for c in ast.walk(n)
    }
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name.split(".")[0], id(node) in module_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.module.split(".")[0], id(node) in module_level))
    return out


def _files(*folders: str) -> list[Path]:
    return [p for f in folders for p in sorted((ROOT / f).rglob("*.py"))]


def test_every_third_party_import_is_declared():
    missing = set()
    for path in _files("stackmff", "metrics", "pipelines", "tests"):
        for top, _ in _imports(path):
            if top in sys.stdlib_module_names or top in FIRST_PARTY or top.startswith("_"):
                continue
            if DIST.get(top, top).lower().replace("_", "-") not in {d.replace("_", "-") for d in DECLARED}:
                missing.add(f"{top} ({path.relative_to(ROOT)})")
    assert not missing, f"imported but not declared in pyproject.toml: {sorted(missing)}"


@pytest.mark.parametrize("extra", ["pipeline", "depth"])
def test_library_imports_extras_only_lazily(extra):
    """A core user (no extras) can import every module of stackmff/ and metrics/."""
    wanted = EXTRAS[extra] - CORE
    eager = [
        f"{path.relative_to(ROOT)} imports {top}"
        for path in _files("stackmff", "metrics")
        for top, at_module_level in _imports(path)
        if at_module_level and DIST.get(top, top).lower() in wanted
    ]
    assert not eager, f"[{extra}] packages imported at module level by the library: {eager}"


def test_core_has_no_pipeline_packages():
    assert not CORE & {"dvc", "dvclive", "prefect", "prefect-dask", "distributed", "transformers"}, CORE


def test_training_without_dvclive_is_one_line(monkeypatch, tmp_path):
    from stackmff.errors import StackMFFError
    from stackmff.models.train import TrainConfig, train

    monkeypatch.setitem(sys.modules, "dvclive", None)  # as if not installed: `import dvclive` raises ImportError
    with pytest.raises(StackMFFError, match=r"pip install 'stackmff\[pipeline\]'"):
        train(TrainConfig(out_dir=str(tmp_path / "run")))
    assert not (tmp_path / "run").exists()  # refused before any work


def test_depth_without_transformers_is_one_line(monkeypatch, tmp_path):
    from stackmff.data.depth import load_depth_model
    from stackmff.errors import StackMFFError

    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(StackMFFError, match=r"pip install 'stackmff\[depth\]'"):
        load_depth_model(tmp_path)


def test_core_install_fuses_and_evaluates(tmp_path, method="stackmff_v3"):
    """With no extra importable (as after a plain `pip install stackmff`): fuse and evaluate a real sample stack."""
    import shutil
    import subprocess

    bench = tmp_path / "bench"
    shutil.copytree(ROOT / "data/samples/ring", bench / "samples" / "dof_stack" / "ring")
    blocked = ["dvc", "dvclive", "prefect", "prefect_dask", "distributed", "dask", "transformers", "ruamel"]
    code = (
        "import sys\n"
        f"sys.modules.update(dict.fromkeys({blocked!r}))\n"  # None entries: importing them raises ImportError
        "from stackmff.cli import main\n"
        "bench, fused, table, method = sys.argv[1:]\n"
        "rc = main(['fuse-dataset', bench, '-o', fused, '-m', method, '--align', 'none'])\n"
        "rc = rc or main(['evaluate', fused, '--benchmark', bench, '--method', method, '-o', table])\n"
        "sys.exit(rc)\n"
    )
    fused, table = tmp_path / "fused", tmp_path / "scores.csv"
    args = [sys.executable, "-c", code, str(bench), str(fused), str(table), method]
    p = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert (fused / "samples" / "ring.png").stat().st_size > 0
    assert "qabf" in table.read_text()
