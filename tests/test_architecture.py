"""Import rules between the packages, read from the source (no import runs): the layers stay layers.

- ``stackmff.models`` (network, checkpoints, tiling, inference) never imports ``stackmff.fusion``: fusion code uses
  the models, not the other way round, so there is no cycle through the method registry;
- the library (``stackmff/``, ``metrics/``) never imports ``pipelines/`` (DVC stages, Prefect flows, benchmarks);
- the fusion registry registers no module of ``stackmff.models``: the learned methods' adapters live in
  ``stackmff.fusion``.

Every import counts: at module level or inside a function, absolute or relative (resolved against the file's package),
and a module named by a string (``importlib.import_module("stackmff.fusion")``).
"""

from __future__ import annotations

import ast
import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("stackmff", "metrics")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, module)`` for every module ``source`` imports; ``module`` is its dotted name (for relative imports).

    ``from a import b`` yields ``a`` and ``a.b`` (``b`` may be a submodule); string constants that are dotted
    names of this repository's packages (``"stackmff.fusion.x"``) count as imports by name.
    """
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and re.fullmatch(r"(stackmff|metrics|pipelines)(\.\w+)+", node.value)  # dotted: "metrics" alone is a word
        ):
            out.append((node.lineno, node.value))
    return out


def _library_imports() -> list[tuple[str, int, str]]:
    """``(file, line, imported module)`` over every .py file of the library."""
    rows = []
    for top in LIBRARY:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            src = path.read_text(encoding="utf-8")
            rows += [(rel, line, mod) for line, mod in _imports(src, _module_name(path), path.name == "__init__.py")]
    return rows


def _within(mod: str, package: str) -> bool:
    return mod == package or mod.startswith(package + ".")


def _report(rows: list[tuple[str, int, str]]) -> str:
    first = {}  # one entry per import statement: its module, not also each imported name
    for f, line, mod in rows:
        first.setdefault((f, line), mod)
    return "; ".join(f"{f}:{line} imports {mod}" for (f, line), mod in first.items())


def test_the_import_reader_sees_nested_relative_and_string_imports():
    src = (
        "import os\n"
        "from . import tiling\n"
        "def f():\n"
        "    from ..fusion.registry import FusionResult\n"
        "    import importlib\n"
        "    importlib.import_module('stackmff.fusion.learned')\n"
    )
    got = {mod for _, mod in _imports(src, "stackmff.models.inference")}
    assert {"os", "stackmff.models.tiling", "stackmff.fusion.registry", "stackmff.fusion.learned"} <= got
    assert "stackmff.fusion.registry.FusionResult" in got
    assert {mod for _, mod in _imports("from .x import y", "stackmff.fusion", is_package=True)} >= {"stackmff.fusion.x"}
    assert {mod for _, mod in _imports("from .. import fusion", "stackmff.models.x")} >= {"stackmff.fusion"}


def test_models_never_import_fusion():
    bad = [r for r in _library_imports() if r[0].startswith("stackmff/models/") and _within(r[2], "stackmff.fusion")]
    assert not bad, f"stackmff.models must not import stackmff.fusion (fusion uses models): {_report(bad)}"


def test_library_never_imports_pipelines():
    bad = [r for r in _library_imports() if _within(r[2], "pipelines")]
    assert not bad, f"the library (stackmff/, metrics/) must not import pipelines/: {_report(bad)}"


def test_fusion_registry_registers_no_models_module():
    path = ROOT / "stackmff" / "fusion" / "registry.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    listed = next(
        (
            ast.literal_eval(node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_METHOD_MODULES" for t in node.targets)
        ),
        None,
    )
    if listed is None:
        pytest.fail("stackmff/fusion/registry.py has no _METHOD_MODULES list any more; update this test")
    bad = [m for m in listed if _within(m, "stackmff.models")]
    assert not bad, f"stackmff/fusion/registry.py _METHOD_MODULES lists models modules {bad}; register from fusion"
    mods = [(line, mod) for line, mod in _imports(path.read_text(encoding="utf-8"), "stackmff.fusion.registry")]
    bad_imports = [("stackmff/fusion/registry.py", line, mod) for line, mod in mods if _within(mod, "stackmff.models")]
    assert not bad_imports, f"the fusion registry must not import models: {_report(bad_imports)}"


def _package(mod: str) -> str:
    """The unit of the layering: ``stackmff.<sub>`` (a subpackage or a top-level module), ``metrics``."""
    parts = mod.split(".")
    return ".".join(parts[:2]) if parts[0] == "stackmff" and len(parts) > 1 else parts[0]


def test_packages_form_layers_without_cycles():
    """errors/color/io at the bottom, align/data/models above, fusion above those, cli and metrics on top."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for f, line, mod in _library_imports():
        if not mod.startswith(("stackmff.", "metrics")):
            continue
        src, dst = _package(_module_name(ROOT / f)), _package(mod)
        if dst in ("stackmff.__version__",) or src == dst:
            continue
        graph.setdefault(src, set()).add(dst)
        where.setdefault((src, dst), f"{f}:{line}")
    # depth-first search for a back edge; report the cycle with one import per edge
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            edges = [f"{a} -> {b} ({where[(a, b)]})" for a, b in itertools.pairwise(cycle)]
            pytest.fail("import cycle between packages: " + "; ".join(edges))
    # io sits on the base: the errors and the process-memory helper (which imports nothing of the library)
    assert not graph.get("stackmff.io", set()) - {"stackmff.errors", "stackmff._memory"}, graph["stackmff.io"]
    assert not graph.get("stackmff._memory"), graph["stackmff._memory"]
