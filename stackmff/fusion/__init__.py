"""Fusion methods. Every method is reached through the registry: :func:`get_fusion_method`, :func:`list_methods`."""

from .registry import FusionMethod, FusionResult, get_fusion_method, list_methods, register_method

__all__ = ["FusionMethod", "FusionResult", "fuse", "get_fusion_method", "list_methods", "register_method"]

# StackMFF V3 with the shipped weights and its default pyramid gather: on held-out stacks it beats every classical
# method in PSNR and SSIM and is insensitive to layer order and invalid layers (weights/README.md, "Validation").
DEFAULT_METHOD = "stackmff_v3"


def fuse(stack, method: str = DEFAULT_METHOD, **options) -> FusionResult:
    """Fuse a ``(N, C, H, W)`` float32 stack in [0, 1] with the named method (see :func:`list_methods`)."""
    from .._checks import check_stack

    check_stack(stack)
    return get_fusion_method(method)(stack, **options)
