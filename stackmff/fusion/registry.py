"""One registry for every fusion method, classical and learned.

A fusion method is a function ``fn(stack, **options) -> FusionResult`` taking a ``(N, C, H, W)`` float32 stack in
[0, 1] (C = 1 or 3). Methods register themselves with :func:`register_method`; the CLI, the benchmark and the tests
iterate :func:`list_methods`, so a new method is automatically exposed, benchmarked and tested.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import os
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import StackMFFError

__all__ = [
    "FusionMethod",
    "FusionResult",
    "get_fusion_method",
    "list_methods",
    "register_method",
]


@dataclass
class FusionResult:
    """Output of a fusion method.

    Attributes:
        image: fused image ``(C, H, W)`` float32 in [0, 1].
        index_map: ``(H, W)`` int source layer per pixel, for methods that pick one layer per pixel (else None).
        confidence: ``(H, W)`` float in [0, 1], how sure the method is of ``index_map`` (else None).
        extras: method-specific diagnostics (small values; plus the maps "gray" and "depth" of ``preset="upstream"``).
    """

    image: np.ndarray
    index_map: np.ndarray | None = None
    confidence: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


@dataclass(frozen=True)
class FusionMethod:
    """A registered method: its name, one-line description, the function and whether it is learned."""

    name: str
    description: str
    fn: Callable[..., FusionResult]
    learned: bool = False
    ordered: bool = False  # True when the method assumes layers in focus order (e.g. V3-star)
    check: Callable[[dict], None] | None = None  # method-specific checks of options (device, weights ...)

    def __call__(self, stack: np.ndarray, **options) -> FusionResult:
        return self.fn(stack, **options)

    def option_names(self) -> list[str]:
        """The keyword options the method takes (what ``-O KEY=VALUE`` may set)."""
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def check_options(self, options: dict) -> dict:
        """Validate ``options`` against the method's signature before any work; return them with their types.

        Unknown names, values of the wrong type (``half_res=notabool``, ``tile=abc``), values outside a ``Literal``,
        negative or non-finite numbers are refused, then the method's own ``check`` runs (e.g. device, weights).

        Raises:
            StackMFFError: one line naming the option, the value and what is expected.
        """
        names = self.option_names()
        hints = typing.get_type_hints(self.fn)
        out = {}
        for key, value in options.items():
            if key not in names:
                raise StackMFFError(
                    f"method {self.name} has no option {key!r}; its options are: {', '.join(names) or 'none'}"
                )
            out[key] = _coerce_option(self.name, key, value, hints.get(key))
        if self.check is not None:
            self.check(out)
        return out


def _coerce_option(method: str, key: str, value, hint) -> object:
    """``value`` (as YAML parsed it) converted to the annotated type ``hint``, or a one-line error."""
    args = typing.get_args(hint)
    allowed = [a for a in args if a is not type(None)] if args and typing.get_origin(hint) is not Literal else [hint]
    if value is None and (type(None) in args or hint is None):
        return None
    for t in allowed:
        if typing.get_origin(t) is Literal:
            if value in typing.get_args(t):
                return value
            continue
        if t is bool and isinstance(value, (bool, np.bool_)):
            return bool(value)
        if t is int and isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
            if value < 0:
                raise StackMFFError(f"option {key} of {method} must be >= 0, got {value}")
            return int(value)
        if t is float and isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
            if not math.isfinite(value) or value < 0:
                raise StackMFFError(f"option {key} of {method} must be a finite number >= 0, got {value}")
            return float(value)
        if t is Path and isinstance(value, os.PathLike):
            return value
        if t in (str, Path) and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    want = " or ".join(_type_name(t) for t in allowed) + (" or null" if type(None) in args else "")
    raise StackMFFError(f"option {key} of {method} must be {want}, got {value!r} (see the method's docstring)")


def _type_name(t) -> str:
    if typing.get_origin(t) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(t)))
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", Path: "a path"}.get(
        t, getattr(t, "__name__", str(t))
    )


_REGISTRY: dict[str, FusionMethod] = {}

# Modules whose import registers methods. Imported lazily so that `import stackmff` stays cheap.
_METHOD_MODULES = (
    "stackmff.fusion.focus_measure",
    "stackmff.fusion.laplacian_pyramid",
    "stackmff.fusion.guided",
    "stackmff.fusion.wavelet",
    "stackmff.fusion.stackmff_v3",
)
_loaded = False


def register_method(
    name: str,
    description: str,
    *,
    learned: bool = False,
    ordered: bool = False,
    check: Callable[[dict], None] | None = None,
):
    """Decorator registering ``fn`` under ``name``. Registering a name twice raises ``ValueError``.

    ``check(options)`` (optional) validates option values that need the method's knowledge (a device, a weights
    file) before any image is loaded; it raises :class:`StackMFFError`.
    """

    def deco(fn: Callable[..., FusionResult]) -> Callable[..., FusionResult]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"fusion method {name!r} is already registered")
        _REGISTRY[name] = FusionMethod(name, description, fn, learned, ordered, check)
        return fn

    return deco


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _METHOD_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            # only tolerate the method module itself being absent (a partial checkout), never its dependencies
            if exc.name != mod:
                raise
    _loaded = True


def list_methods() -> list[FusionMethod]:
    """All registered methods, sorted by name."""
    _load_all()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_fusion_method(name: str) -> FusionMethod:
    """Look a method up by name.

    Raises:
        StackMFFError: unknown name (the message lists the known ones).
    """
    _load_all()
    if name not in _REGISTRY:
        raise StackMFFError(
            f"unknown method {name!r}; choose one of: {', '.join(sorted(_REGISTRY))} (see `stackmff methods`)"
        )
    return _REGISTRY[name]
