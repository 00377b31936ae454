"""Training data: procedural RGB-D scenes, focal-stack synthesis and "general" augmentation.

Torch datasets live in :mod:`stackmff.data.datasets` (imported explicitly so that this package does not import torch).
"""

from .procedural import RGBDScene, load_rgbd_samples, make_scene
from .synthesis import (
    INVALID_KINDS,
    SynthStack,
    inject_invalid_layers,
    shuffle_layers,
    synthesize_physical,
    synthesize_upstream,
)

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
