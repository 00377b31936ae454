"""One registry for every fusion method, classical and learned.

A fusion method is a function ``fn(stack, **options) -> FusionResult`` taking a ``(N, C, H, W)`` float32 stack in
[0, 1] (C = 1 or 3). Methods register themselves with :func:`register_method`; the CLI, the benchmark and the tests
iterate :func:`list_methods`, so a new method is automatically exposed, benchmarked and tested.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .._checks import StackMFFError

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

    def __call__(self, stack: np.ndarray, **options) -> FusionResult:
        return self.fn(stack, **options)


_REGISTRY: dict[str, FusionMethod] = {}

# Modules whose import registers methods. Imported lazily so that `import stackmff` stays cheap.
_METHOD_MODULES = (
    "stackmff.fusion.focus_measure",
    "stackmff.fusion.laplacian_pyramid",
    "stackmff.fusion.guided",
    "stackmff.fusion.wavelet",
    "stackmff.models.methods",
)
_loaded = False


def register_method(name: str, description: str, *, learned: bool = False, ordered: bool = False):
    """Decorator registering ``fn`` under ``name``. Registering a name twice raises ``ValueError``."""

    def deco(fn: Callable[..., FusionResult]) -> Callable[..., FusionResult]:
        if name in _REGISTRY and _REGISTRY[name].fn is not fn:
            raise ValueError(f"fusion method {name!r} is already registered")
        _REGISTRY[name] = FusionMethod(name, description, fn, learned, ordered)
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
