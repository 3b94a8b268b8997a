"""Keypoints supervised by the data's named landmarks (:data:`~core.vocabulary.KEYPOINT_NAMES`).

Rendered Live2D clips and the puppet mark 12 landmarks per frame (eyes, irises, brows, mouth corners and lips,
nose, chin) in the batch's ``driving_keypoints`` as pixel coordinates ``(x, y)`` of the frame; descriptors emit
keypoints in normalised coordinates ``[-1, 1]`` (``align_corners=True``: pixel 0 → −1, pixel ``W − 1`` → 1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from core.vocabulary import KEYPOINT_NAMES

LANDMARK_BETA = 0.05
"""Smooth-L1 ``beta`` of :func:`landmark_loss`, normalised units (about 1.6 px at 64²)."""


def landmark_loss(keypoints: Tensor, landmarks: Tensor, width: int) -> Tensor:
    """Smooth-L1 between a descriptor's first ``len(KEYPOINT_NAMES)`` keypoints and the data's landmarks.

    Args:
        keypoints: ``B×K×2`` normalised, ``K ≥ 12``; keypoint ``i < 12`` is landmark ``KEYPOINT_NAMES[i]``, the rest
            are not compared.
        landmarks: ``B×12×2`` pixel coordinates of frames ``width`` pixels wide (square frames).
        width: the frames' width in pixels.

    Returns:
        The mean smooth-L1 (``beta`` :data:`LANDMARK_BETA`) over the named keypoints' coordinates.
    """
    named = len(KEYPOINT_NAMES)
    points = landmarks.to(keypoints.dtype) / (width - 1) * 2.0 - 1.0
    return F.smooth_l1_loss(keypoints[:, :named], points, beta=LANDMARK_BETA)
