"""Named StackMFF V3 variants: ``create_model(name, **overrides)``, ``list_models()``, ``register_model``.

Each variant is a factory returning a :class:`~stackmff.models.stackmff_v3.StackMFFV3Config`; the tests iterate
:func:`list_models`, so a new variant is automatically tested.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

from ..errors import StackMFFError
from .stackmff_v3 import StackMFFV3, StackMFFV3Config

__all__ = ["create_model", "get_config", "list_models", "register_model"]

_VARIANTS: dict[str, Callable[[], StackMFFV3Config]] = {}


def register_model(fn: Callable[[], StackMFFV3Config]) -> Callable[[], StackMFFV3Config]:
    """Register a config factory under its function name (a duplicate name warns and replaces)."""
    if fn.__name__ in _VARIANTS:
        warnings.warn(f"model variant {fn.__name__!r} registered twice; the later one wins", stacklevel=2)
    _VARIANTS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered variants, sorted."""
    return sorted(_VARIANTS)


def get_config(name: str, **overrides) -> StackMFFV3Config:
    """The config of variant ``name`` with fields replaced by ``overrides``.

    Raises:
        StackMFFError: unknown variant or unknown field.
    """
    if name not in _VARIANTS:
        raise StackMFFError(f"unknown model variant {name!r}; choose one of: {', '.join(list_models())}")
    d = _VARIANTS[name]().to_dict()
    bad = sorted(set(overrides) - set(d))
    if bad:
        raise StackMFFError(f"unknown model option(s) {', '.join(bad)}; valid: {', '.join(sorted(d))}")
    d.update(overrides)
    d.setdefault("extras", {})["variant"] = name
    return StackMFFV3Config.from_dict(d)


def create_model(name: str = "v3", **overrides) -> StackMFFV3:
    """Build variant ``name`` (randomly initialised), e.g. ``create_model("v3_small", rope=True)``."""
    return StackMFFV3(get_config(name, **overrides))


@register_model
def v3() -> StackMFFV3Config:
    """Upstream StackMFF V3: 2,738,268 parameters, rotary layer positions."""
    return StackMFFV3Config()


@register_model
def v3_norope() -> StackMFFV3Config:
    """Upstream V3 without rotary layer positions: equivariant to layer order by construction."""
    return StackMFFV3Config(rope=False)


@register_model
def v3_star() -> StackMFFV3Config:
    """V3-star: soft depth regression head, for stacks in focus order (trained on ordered stacks)."""
    return StackMFFV3Config(head="regress")


@register_model
def v3_small() -> StackMFFV3Config:
    """CPU variant (~0.3 M parameters): half widths, one block per stage, 8-dim tokens, no rotary positions."""
    return StackMFFV3Config(
        dims=(16, 32, 64, 128), depths=(1, 1, 1, 1), attn_heads=2, ffn_dim=32, rope=False, drop_path_rate=0.0
    )


@register_model
def v3_mid() -> StackMFFV3Config:
    """Middle variant (~0.9 M parameters): upstream widths and tokens, one block per stage, no rotary positions.

    The capacity test of issue 13 (does the small model limit the fused image?): ~4x v3_small's parameters at
    ~1/3 of upstream V3's, trained with the same recipe (weights/README.md)."""
    return StackMFFV3Config(depths=(1, 1, 1, 1), rope=False, drop_path_rate=0.0)
