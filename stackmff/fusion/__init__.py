"""Fusion methods. Every method is reached through the registry: :func:`get_fusion_method`, :func:`list_methods`."""

from .registry import FusionMethod, FusionResult, get_fusion_method, list_methods, register_method

__all__ = ["FusionMethod", "FusionResult", "fuse", "get_fusion_method", "list_methods", "register_method"]

DEFAULT_METHOD = "laplacian_pyramid"


def fuse(stack, method: str = DEFAULT_METHOD, **options) -> FusionResult:
    """Fuse a ``(N, C, H, W)`` float32 stack in [0, 1] with the named method (see :func:`list_methods`)."""
    from .._checks import check_stack

    check_stack(stack)
    return get_fusion_method(method)(stack, **options)
