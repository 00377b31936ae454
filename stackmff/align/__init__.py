"""Registration of focal-stack layers: undo focus breathing, hand shake and exposure drift before fusion.

Real stacks are not registered: refocusing changes magnification ("focus breathing", often 1-5 % across a
stack) and hand-held or rail shots shift and rotate. Every fusion method turns such misregistration into ghosts.
:func:`align_stack` estimates, for every layer, a transform to a reference layer, warps the layers into the
reference frame (each layer resampled once) and matches their brightness.

How (one class of decision per step, as in focus-stack's ``task_align``; each module's notes give the details):

- Content analysis on a small copy (the "check level", <= 320 px): every layer's focus profile (Laplacian energy of
  48 px patches). Invalid frames are found first (:mod:`.invalid_frames`): over/under-exposed, blank or unrelated
  (low-pass luma far from the stack's median) and much noisier (the measures and thresholds of V3's outlier
  rejection), and blurred everywhere (never near the sharpest layer on any textured patch).
- The link tree, from content only (:mod:`.link_tree`): neighbours in focus are linked; the reference is the tree's
  centre. Any permutation of the files gives the same transforms.
- Per link, patch displacements by phase correlation and a robust similarity fit give the transform AND its
  uncertainty (:mod:`.patches`). ``auto`` leaves the stack untouched (the input array itself, bit-exact) unless some
  valid layer's chained corner displacement exceeds 5 of its standard errors and ``skip_tolerance`` px; the same fits
  choose the motion model (similarity, affine, homography) by an F test.
- Each link is then refined by OpenCV's ECC coarse-to-fine on a Gaussian pyramid of luma, from the patch estimate
  (:mod:`.ecc`). When ECC fails or fits badly, ORB features + RANSAC give a second initialisation (:mod:`.features`).
- Estimation runs on a copy no larger than ``max_size`` pixels; transforms are rescaled to full resolution
  (:mod:`.estimate`).
- Brightness and output frame (:mod:`.warp`): a per-layer, per-channel exposure gain to the consensus of the valid
  layers; ``crop`` keeps the largest rectangle every valid layer covers, ``fill`` the reference frame.
- A layer whose link does not fit (low correlation after alignment, or an implausible transform) is reported with
  a warning on ``logging.getLogger("stackmff")``; it gets its parent's transform, or is dropped on request. After
  alignment every layer's residual misalignment against its parent is measured again (``residuals``, ``--json``).
- The transforms can be saved to a small JSON file and applied to another stack (:mod:`.transforms_file`).

Transform convention: ``matrices[i]`` is a 3x3 matrix mapping homogeneous pixel coordinates of the reference layer
to those of layer ``i`` (``x_i = M_i @ x_ref``; pixel centres at integer coordinates, full resolution). The aligned
layer is ``layer_i(M_i @ x)``, i.e. ``cv2.warpPerspective(layer_i, M_i, ..., flags=WARP_INVERSE_MAP)``.
"""

from .features import orb_transform
from .result import AlignResult
from .stack import align_stack
from .transforms import ALIGN_MODES
from .transforms_file import load_transforms, save_transforms
from .warp import FRAMES

__all__ = [
    "ALIGN_MODES",
    "FRAMES",
    "AlignResult",
    "align_stack",
    "load_transforms",
    "orb_transform",
    "save_transforms",
]
