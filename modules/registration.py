"""Registration: the affine that best aligns one frame with another (OpenCV's ECC), as one more keypoint.

A character's head and body move, at 64², mostly as one affine motion, and registering two frames of the *same*
character finds it whatever the character looks like — where a detector trained on a dozen characters does not
(README, Quality: on held-out characters the affine alone is 35 % under the no-motion floor in self-reenactment,
the keypoints + warping generator 23 %). The animator adds it as a keypoint to the descriptor's: FOMM's
first-order motion of that keypoint *is* the affine, so the warping generator's dense motion can choose it where
it fits and the learned keypoints' motions elsewhere.

Conventions (as :mod:`modules.descriptors`): normalised coordinates ``[-1, 1]``, x right, y down,
``align_corners=True``. An affine ``A`` ``B×2×3`` maps points ``p`` of the *fixed* frame to the *moving* one,
``A·[p; 1]``, with ``fixed(p) ≈ moving(A·[p; 1])`` — the backward map ``grid_sample`` takes to bring ``moving``
onto ``fixed``. The *reference* frame of a pair (the portrait in training and self-reenactment, the driver's first
frame in relative transfer) has the keypoint at the centre with the identity Jacobian; the other frame has it where
FOMM's motion ``z ↦ k_ref + J_ref·J⁻¹·(z − k)`` equals ``A``: ``J = A_lin⁻¹``, ``k = −A_lin⁻¹·a``.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from torch import Tensor

MAX_DEPARTURE = 0.5
"""An ECC result whose linear part departs from the identity, or whose translation from 0, by more than this (in
normalised units, a quarter of the image), or whose linear part scales areas by less than a half or more than two,
is taken as a failure and replaced by the identity (a near-singular affine has no usable inverse)."""


Window = tuple[float, float, float]
"""A square of the fixed frame ECC compares: centre ``x``, ``y`` and half its side, normalised (``(0, 0, 1)``: the
whole frame)."""

WHOLE_FRAME: Window = (0.0, 0.0, 1.0)

MotionType = Literal["affine", "euclidean"]
"""What ECC fits: ``"affine"`` (six parameters: rotation, translation, scale, stretch and shear) or ``"euclidean"``
(rotation and translation only; still returned as an affine)."""

_ECC_MOTION = {"affine": cv2.MOTION_AFFINE, "euclidean": cv2.MOTION_EUCLIDEAN}


def register_affine(moving: Tensor, fixed: Tensor, window: Window = WHOLE_FRAME, motion: MotionType = "affine",
                    iterations: int = 50, epsilon: float = 1e-4, blur: int = 3) -> tuple[Tensor, Tensor]:
    """The affine that brings ``moving`` onto ``fixed``, per item, by OpenCV's ECC on grey levels.

    Args:
        moving, fixed: ``B×C×H×W`` in ``[0, 1]`` (no gradient flows through the registration).
        window: the part of ``fixed`` that must match (:data:`Window`); the affine then fits what moves there.
        motion: the family ECC searches (:data:`MotionType`); a Euclidean motion, rotation and translation in
            pixels, is a rigid motion in normalised coordinates only for square frames.
        iterations, epsilon: ECC's stopping criteria.
        blur: Gaussian filter size ECC smooths both images with (odd; 0 for none).

    Returns:
        ``A`` ``B×2×3`` in normalised coordinates (module docstring) and ``registered`` ``B`` bool: ``False`` where
        ECC did not converge or went further than :data:`MAX_DEPARTURE`, and ``A`` is the identity.
    """
    if moving.shape != fixed.shape:
        raise ValueError(f"moving and fixed must have the same shape, got {tuple(moving.shape)} and {tuple(fixed.shape)}")
    height, width = moving.shape[-2:]
    grey = lambda frames: (frames.detach().float().mean(1) * 255.0).cpu().numpy()  # noqa: E731
    movings, fixeds = grey(moving), grey(fixed)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, epsilon)
    scale = np.array([(width - 1) / 2.0, (height - 1) / 2.0])
    x, y, half = window
    if half <= 0:
        raise ValueError(f"a registration window needs a positive half side, got {window}")
    if motion not in _ECC_MOTION:
        raise ValueError(f"motion must be one of {', '.join(_ECC_MOTION)}, got {motion!r}")
    (left, top), (right, bottom) = [np.clip(np.round((np.array([x, y]) + sign * half + 1.0) * scale), 0, [width - 1, height - 1]).astype(int)
                                    for sign in (-1, 1)]
    mask = np.zeros((height, width), np.uint8)
    mask[top : bottom + 1, left : right + 1] = 1
    affines, registered = [], []
    for moving_item, fixed_item in zip(movings, fixeds):
        pixels = np.eye(2, 3, dtype=np.float32)
        try:
            _, pixels = cv2.findTransformECC(fixed_item, moving_item, pixels, _ECC_MOTION[motion], criteria, mask, blur)
            ok = True
        except cv2.error:  # ECC raises when it does not converge (e.g. a blank frame)
            ok = False
        linear = pixels[:, :2] * scale[None, :] / scale[:, None]  # S⁻¹ W S
        shift = (pixels[:, :2] @ scale + pixels[:, 2] - scale) / scale  # S⁻¹ (W s + t − s)
        affine = np.concatenate([linear, shift[:, None]], 1)
        if (not ok or not np.isfinite(affine).all() or np.abs(affine - np.eye(2, 3)).max() > MAX_DEPARTURE
                or not 0.5 <= np.linalg.det(affine[:, :2]) <= 2.0):
            affine, ok = np.eye(2, 3), False
        affines.append(affine)
        registered.append(ok)
    return (torch.tensor(np.stack(affines), dtype=moving.dtype, device=moving.device),
            torch.tensor(registered, device=moving.device))


def affine_keypoint(affine: Tensor) -> tuple[Tensor, Tensor]:
    """The keypoint ``B×1×2`` and Jacobian ``B×1×2×2`` of the registered frame whose first-order motion against the
    reference's (centre, identity) is ``affine`` ``B×2×3`` (module docstring)."""
    inverse = torch.linalg.inv(affine[:, :, :2])
    keypoint = -(inverse @ affine[:, :, 2:]).squeeze(-1)
    return keypoint[:, None], inverse[:, None]


def reference_keypoint(batch: int, device: torch.device | str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The reference frame's keypoint ``B×1×2`` (the centre) and Jacobian ``B×1×2×2`` (the identity)."""
    return torch.zeros(batch, 1, 2, device=device, dtype=dtype), torch.eye(2, device=device, dtype=dtype).expand(batch, 1, 2, 2)


def warp_affine(images: Tensor, affine: Tensor) -> Tensor:
    """``images`` ``B×C×H×W`` resampled at ``affine·[p; 1]`` for every output point ``p`` (``affine`` ``B×2×3``,
    normalised coordinates; outside points repeat the border): ``moving`` brought onto ``fixed`` by the
    :func:`register_affine` of the two."""
    grid = create_meshgrid(*images.shape[-2:], normalized_coordinates=True, device=images.device, dtype=images.dtype)[0]
    points = torch.einsum("bij,hwj->bhwi", affine[:, :, :2], grid) + affine[:, None, None, :, 2]
    return F.grid_sample(images, points, align_corners=True, padding_mode="border")
