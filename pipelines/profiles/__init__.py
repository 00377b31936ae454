"""Parameter profiles: named sets of ``params.yaml`` overrides (``pipelines/profiles/<name>.yaml``).

A profile file holds ``set:``, a mapping of dotted ``params.yaml`` keys to values that REPLACE the current ones
(mappings included), exactly like ``dvc exp run -S key=value``. String values may contain ``{benchmark_root}``,
filled in from ``--benchmark-root``. Applying a profile rewrites the params file in place (comments and order kept,
written atomically) after checking the result strictly with :mod:`pipelines.config`; ``--print-set`` prints the
equivalent ``dvc exp run`` command instead.

Usage::

    python -m pipelines.profiles paper --benchmark-root /data/mff_benchmarks [--params params.yaml] [--print-set]
"""

from __future__ import annotations

import copy
import io
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.config import SECTIONS, build
from stackmff.errors import StackMFFError
from stackmff.io import atomic_write

__all__ = ["PROFILES_DIR", "apply_profile", "available_profiles", "dvc_set_args", "load_profile"]

PROFILES_DIR = Path(__file__).resolve().parent
PLACEHOLDERS = ("benchmark_root",)


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``pipelines/profiles/``."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _fill(value: Any, fields: Mapping[str, str | None], key: str) -> Any:
    if isinstance(value, str):
        for name in PLACEHOLDERS:
            token = "{" + name + "}"
            if token in value:
                if not fields.get(name):
                    raise StackMFFError(f"profile key {key} needs --{name.replace('_', '-')}; pass it")
                value = value.replace(token, str(fields[name]))
        return value
    if isinstance(value, dict):
        return {k: _fill(v, fields, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fields, key) for v in value]
    return value


def load_profile(name_or_path: str | os.PathLike, *, benchmark_root: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read a profile: ``{dotted key: value}`` with placeholders filled in.

    Args:
        name_or_path: a shipped profile name (``paper``) or a YAML file.
        benchmark_root: fills ``{benchmark_root}``; must be an existing folder.

    Raises:
        StackMFFError: unknown profile, malformed file, missing or non-existent benchmark root.
    """
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise StackMFFError(f"no profile {name_or_path!r}; use one of {', '.join(available_profiles())} or a YAML file")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or not isinstance(data.get("set"), dict) or set(data) != {"set"}:
        raise StackMFFError(f"{path} must hold one mapping `set:` of dotted params keys to values")
    if benchmark_root is not None:
        root = Path(benchmark_root).expanduser().resolve()
        if not root.is_dir():
            raise StackMFFError(f"benchmark root {benchmark_root} is not a folder; pass the folder holding <dataset>/")
        benchmark_root = str(root)
    fields = {"benchmark_root": benchmark_root}
    return {str(k): _fill(v, fields, str(k)) for k, v in data["set"].items()}


def _set_dotted(doc: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    cur = doc
    for i, part in enumerate(parts[:-1]):
        nxt = cur.get(part)
        if nxt is None:
            cur[part] = nxt = {}
        if not isinstance(nxt, dict):
            raise StackMFFError(f"cannot set {key}: {'.'.join(parts[: i + 1])} is not a mapping in the params file")
        cur = nxt
    cur[parts[-1]] = copy.deepcopy(value)


def _styled(value: Any) -> Any:
    """ruamel nodes for a new value: lists and small flat mappings in flow style, like the rest of params.yaml."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, list):
        seq = CommentedSeq(_styled(v) for v in value)
        if all(not isinstance(v, (list, dict)) for v in value):
            seq.fa.set_flow_style()
        return seq
    if isinstance(value, dict):
        m = CommentedMap((k, _styled(v)) for k, v in value.items())
        if len(value) <= 6 and all(not isinstance(v, (list, dict)) for v in value.values()):
            m.fa.set_flow_style()
        return m
    return value


def _assign_rt(doc: Any, key: str, value: Any) -> None:
    """Replace ``key`` in a ruamel document; a mapping replacing a mapping is updated key by key (keys missing from
    the new value are deleted) so that the comments of the keys that stay are kept."""
    parts = key.split(".")
    cur = doc
    for part in parts[:-1]:
        if cur.get(part) is None:
            cur[part] = _styled({})
        cur = cur[part]
    last = parts[-1]
    old = cur.get(last)
    if isinstance(value, dict) and isinstance(old, dict) and value:
        for k in [k for k in old if k not in value]:
            del old[k]
        for k, v in value.items():
            _assign_rt(old, str(k), v)
    else:
        cur[last] = _styled(copy.deepcopy(value))


def _check(doc: Mapping[str, Any], source: str) -> None:
    """Strict check of every section (and of each train variant's TrainConfig keys)."""
    for section, cls in SECTIONS.items():
        built = build(cls, doc.get(section) or {}, section, source=source)
        if section == "train":
            from pipelines.stages.train import check_variant

            for variant, values in built.variants.items():
                check_variant(variant, values)
    unknown = [k for k in doc if k not in SECTIONS]
    if unknown:
        raise StackMFFError(f"{source}: unknown section {unknown[0]}; known: {', '.join(SECTIONS)}")


def apply_profile(
    overrides: Mapping[str, Any], params: str | os.PathLike = "params.yaml", *, out: str | os.PathLike | None = None
) -> Path:
    """Write ``params`` with ``overrides`` applied (comments and key order kept) to ``out`` (default: in place).

    Returns:
        The written file.

    Raises:
        StackMFFError: the result does not pass the strict checks of :mod:`pipelines.config` (nothing is written).
    """
    from ruamel.yaml import YAML

    params = Path(params)
    if not params.is_file():
        raise StackMFFError(f"params file not found: {params}; run from the repository root or pass --params")
    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 120
    rt.indent(mapping=2, sequence=4, offset=2)
    doc = rt.load(params.read_text(encoding="utf-8"))
    plain = yaml.safe_load(params.read_text(encoding="utf-8")) or {}
    for key, value in overrides.items():
        _set_dotted(plain, key, value)  # validates the path (raises on a non-mapping on the way)
        _assign_rt(doc, key, value)
    _check(plain, f"{params} + profile")
    buf = io.StringIO()
    rt.dump(doc, buf)
    if yaml.safe_load(buf.getvalue()) != plain:  # the comment-keeping update must mean exactly the replacement
        raise StackMFFError(f"internal error: {params} with the profile does not read back as written; report it")
    target = Path(out) if out is not None else params
    with atomic_write(target, mode="w", overwrite=True) as f:
        f.write(buf.getvalue())
    return target


def _hydra_value(value: Any) -> str:
    """A value in Hydra's override grammar (what ``dvc exp run -S`` parses): strings quoted, containers inline."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "\\'") + "'"
    if isinstance(value, list):
        return "[" + ", ".join(_hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_hydra_key(str(k))}: {_hydra_value(v)}" for k, v in value.items()) + "}"
    raise StackMFFError(f"cannot express {value!r} as a dvc exp run -S value")


def _hydra_key(key: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", key):
        raise StackMFFError(
            f"key {key!r} cannot be set with dvc exp run -S (Hydra keys are identifiers); apply the profile"
        )
    return key


def dvc_set_args(overrides: Mapping[str, Any], params: str | os.PathLike = "params.yaml") -> list[str]:
    """The ``dvc exp run`` arguments equivalent to applying ``overrides`` to ``params``.

    DVC applies ``-S`` with Hydra, which merges mappings instead of replacing them, so a mapping value becomes one
    override per leaf (``+key`` for a new key) plus ``~key`` deletions of the keys the profile leaves out.
    """
    current = yaml.safe_load(Path(params).read_text(encoding="utf-8")) or {}
    out: list[str] = []

    def walk(key: str, value: Any, cur: Any, exists: bool) -> None:
        if isinstance(value, dict) and value and isinstance(cur, dict):
            for k in cur:
                if k not in value:
                    out.extend(["-S", f"~{key}.{_hydra_key(str(k))}"])
            for k, v in value.items():
                walk(f"{key}.{_hydra_key(str(k))}", v, cur.get(k), k in cur)
            return
        out.extend(["-S", f"{'' if exists else '+'}{key}={_hydra_value(value)}"])

    for key, value in overrides.items():
        for part in key.split("."):
            _hydra_key(part)
        cur: Any = current
        exists = True
        for part in key.split("."):
            if isinstance(cur, dict) and part in cur:
                cur = cur[part]
            else:
                cur, exists = None, False
                break
        walk(key, value, cur, exists)
    return out


def format_dvc_command(overrides: Mapping[str, Any], params: str | os.PathLike = "params.yaml") -> str:
    """``dvc exp run -S ... -S ...`` as one shell-quoted line."""
    return shlex.join(["dvc", "exp", "run", *dvc_set_args(overrides, params)])
