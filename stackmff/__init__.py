"""StackMFF V3: general multi-focus image stack fusion.

Public entry points: :mod:`stackmff.io` (load/save stacks), :func:`stackmff.fusion.fuse` and the method registry,
:mod:`stackmff.models` (the StackMFF V3 network), :mod:`stackmff.data` (stack synthesis), :mod:`stackmff.align`,
:mod:`stackmff.errors` (the exceptions raised for bad input).
"""

__version__ = "0.1.0"
