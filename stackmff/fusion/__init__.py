"""Fusion methods. Every method is reached through the registry: :func:`get_fusion_method`, :func:`list_methods`."""

from .registry import FusionMethod, FusionResult, get_fusion_method, list_methods, register_method

__all__ = ["FusionMethod", "FusionResult", "fuse", "get_fusion_method", "list_methods", "register_method"]

# Classical default on purpose: the shipped StackMFF V3 weights (``stackmff_v3``) are far more robust to invalid
# layers and layer order, but on clean held-out stacks they do not beat the best classical method in PSNR/SSIM
# (weights/README.md, "Validation"), which is the condition for V3 to become the default.
DEFAULT_METHOD = "laplacian_pyramid"


def fuse(stack, method: str = DEFAULT_METHOD, **options) -> FusionResult:
    """Fuse a ``(N, C, H, W)`` float32 stack in [0, 1] with the named method (see :func:`list_methods`)."""
    from .._checks import check_stack

    check_stack(stack)
    return get_fusion_method(method)(stack, **options)
