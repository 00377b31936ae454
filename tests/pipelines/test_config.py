"""params.yaml <-> dataclasses <-> dvc.yaml consistency, and strict loading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.config import SECTIONS, FuseParams, load_params
from stackmff.errors import StackMFFError

ROOT = Path(__file__).resolve().parents[2]


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_every_section_loads_strictly():
    for section in SECTIONS:
        load_params(ROOT / "params.yaml", section)


def test_typo_names_the_full_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("fuse:\n  methds: [a]\n")
    with pytest.raises(StackMFFError, match=r"fuse\.methds"):
        load_params(p, "fuse")
    p.write_text("synthesize:\n  benchmark:\n    scenes: four\n")
    with pytest.raises(StackMFFError, match=r"synthesize\.benchmark\.scenes must be an integer"):
        load_params(p, "synthesize")


def test_types_are_converted(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("fuse:\n  methods: [a, b]\n  index_maps: false\n  options: {a: {k: 1}}\n")
    fp = load_params(p, "fuse")
    assert isinstance(fp, FuseParams) and fp.methods == ["a", "b"] and fp.index_maps is False
    assert fp.options == {"a": {"k": 1}}


def _lookup(d: dict, dotted: str):
    cur = d
    for part in dotted.split("."):
        assert isinstance(cur, dict) and part in cur, f"{dotted} missing at {part}"
        cur = cur[part]
    return cur


def test_every_dvc_params_key_exists():
    """Expand each stage's matrix/foreach by hand and check its tracked params keys exist in params.yaml."""
    params = _params()
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    checked = 0
    for st in stages.values():
        body = st.get("do", st)
        items: list[dict] = [{}]
        if "matrix" in st:
            for key, values in st["matrix"].items():
                if isinstance(values, str):
                    values = _lookup(params, values.strip("${}"))
                items = [dict(it, **{key: v}) for it in items for v in values]
        elif "foreach" in st:
            items = [{"__key": k} for k in st["foreach"]]
        for it in items:
            for key in body.get("params", []):
                key = re.sub(r"\$\{item\.(\w+)\}", lambda m, it=it: str(it[m.group(1)]), key)
                key = key.replace("${key}", str(it.get("__key", "")))
                _lookup(params, key)
                checked += 1
    assert checked > 20


def test_every_method_has_options_and_every_benchmark_an_align_mode():
    fp = load_params(ROOT / "params.yaml", "fuse")
    for m in fp.methods + fp.learned + fp.imported:
        assert m in fp.options
    for b in fp.benchmarks:
        assert b in fp.align


def test_default_training_is_not_cut_by_wall_time():
    """A wall-time cap stops the fine-tune at a step that depends on the machine's load (step 20 of 30 under load
    on 2 cores), so `dvc repro` would give other weights, and other report numbers, on another day."""
    from pipelines.config import load_params

    for name, variant in load_params(ROOT / "params.yaml", "train").variants.items():
        assert variant.get("max_minutes", 0) == 0, name
