"""Training data: RGB-D scenes (procedural and real samples), focal-stack synthesis and "general" augmentation.

Torch datasets live in :mod:`stackmff.data.datasets` (imported explicitly so that this package does not import torch).
"""

from .augment import INVALID_KINDS, inject_invalid_layers, shuffle_layers
from .procedural import make_scene
from .rgbd import RGBDScene, load_rgbd_samples
from .synthesis import SynthStack, synthesize_physical, synthesize_upstream

__all__ = [
    "INVALID_KINDS",
    "RGBDScene",
    "SynthStack",
    "inject_invalid_layers",
    "load_rgbd_samples",
    "make_scene",
    "shuffle_layers",
    "synthesize_physical",
    "synthesize_upstream",
]
