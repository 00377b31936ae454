"""Image-fusion metrics: full-reference (with an all-in-focus ground truth) and no-reference (against the sources).

Every metric is a function ``metric(fused, reference_or_sources, *, data_range=1.0, ...)`` (or ``metric(fused, *,
...)`` for single-image scores) accepting numpy arrays or torch tensors shaped ``(H, W)``, ``(C, H, W)`` or
``(B, C, H, W)``; sources add an axis N before C. See :mod:`metrics._validate` for the input/return contract and
:mod:`metrics.evaluate` for evaluating a tree of fused results.
"""

from .average_gradient import average_gradient
from .blur_check import block_sharpness, blurred_share, ghost_share, sharpness_ratio
from .entropy import entropy
from .fsim import fsim
from .gmsd import gmsd
from .halo import halo, overshoot
from .mae import mae
from .ms_ssim import ms_ssim
from .mse import mse, rmse
from .mutual_information import mutual_information, normalized_mutual_information
from .niqe import niqe
from .piqe import piqe
from .psnr import psnr, psnr_gray8
from .qabf import qabf
from .scd import scd
from .spatial_frequency import spatial_frequency
from .ssim import ssim, ssim_gray8
from .standard_deviation import standard_deviation
from .vif import vif_p

__all__ = [
    "average_gradient",
    "block_sharpness",
    "blurred_share",
    "entropy",
    "fsim",
    "ghost_share",
    "gmsd",
    "halo",
    "mae",
    "ms_ssim",
    "mse",
    "mutual_information",
    "niqe",
    "normalized_mutual_information",
    "overshoot",
    "piqe",
    "psnr",
    "psnr_gray8",
    "qabf",
    "rmse",
    "scd",
    "sharpness_ratio",
    "spatial_frequency",
    "ssim",
    "ssim_gray8",
    "standard_deviation",
    "vif_p",
]
