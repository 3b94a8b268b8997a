"""Which sparse motion should move each pixel: a dense motion's choice checked against the data's region maps.

A FOMM-style dense motion (:class:`~modules.backbones.warping.DenseMotion`) picks, per output pixel, a softmax
mixture of the identity (index 0: the pixel stays) and the K keypoints' motions. Where the batch has region maps
(puppets, rendered Live2D clips) the data says what that choice should be: background and body stay, the head
moves — and where the keypoints are named landmarks, each eye, brow and the mouth moves with its own landmarks.
Region maps are ``B×H×W`` int labels (:data:`~core.vocabulary.REGIONS`) of the source and of the driving frame;
the weights live in the driving (output) frame, so a pixel the head covers in *either* frame must not stay (the
head moves onto it, or uncovers it and the background is fetched from beside the head).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from core.vocabulary import HEAD_REGIONS
from modules.losses import region_mask

PART_LANDMARKS: dict[str, tuple[str, ...]] = {
    "left_eye": ("left_eye", "left_iris"), "right_eye": ("right_eye", "right_iris"),
    "left_brow": ("left_brow",), "right_brow": ("right_brow",),
    "mouth": ("mouth_left", "mouth_right", "mouth_top", "mouth_bottom"),
    "face": ("nose", "chin"), "hair": ("nose", "chin"),
}
"""Region → the landmarks (:data:`~core.vocabulary.KEYPOINT_NAMES`) whose motion should move its pixels: each
eye, brow and the mouth its own; face and hair the rigid head's (nose, chin), never an eye's or the mouth's, whose
Jacobians would squash or stretch them."""
STILL_REGIONS: tuple[str, ...] = ("background", "body")
"""Regions that should take the identity motion."""


def part_assignment_loss(weights: Tensor, source_regions: Tensor, driving_regions: Tensor, keypoint_names: tuple[str, ...] = ()) -> Tensor:
    """Cross-entropy of a dense motion's per-pixel choice of sparse motions against the parts the region maps mark.

    Args:
        weights: ``B×(K+1)×h×w`` softmax weights over the identity (index 0) and the K keypoints' motions.
        source_regions, driving_regions: ``B×H×W`` region maps (any ``H×W``, averaged down to ``h×w``).
        keypoint_names: the K keypoints' names where they are named landmarks; a part whose landmarks are all
            missing is left out. Empty for unsupervised keypoints: then every head region takes *any* keypoint's
            motion (``1 − w_0``), which only says that the head moves and the rest stays.

    Returns:
        The mean over marked pixels of ``−log Σ_{k ∈ part} w_k``: a region of :data:`PART_LANDMARKS` in either
        frame (the eye being closed over must move with the eye) takes its landmarks' motions, background and body
        that are so in both frames take the identity (a pixel in two parts counts for both). 0 with the graph kept
        when nothing is marked.
    """
    size = weights.shape[-2:]
    either = lambda names: region_mask(source_regions, names).maximum(region_mask(driving_regions, names))  # noqa: E731
    if keypoint_names:
        groups = [(either((region,)), [1 + keypoint_names.index(n) for n in names if n in keypoint_names]) for region, names in PART_LANDMARKS.items()]
    else:
        groups = [(either(HEAD_REGIONS), list(range(1, weights.shape[1])))]
    groups.append((region_mask(source_regions, STILL_REGIONS) * region_mask(driving_regions, STILL_REGIONS), [0]))
    total, area = weights.sum() * 0.0, weights.new_zeros(())
    for mask, indices in groups:
        if indices:
            share = F.adaptive_avg_pool2d(mask, size)
            total = total - (share * weights[:, indices].sum(1, keepdim=True).clamp_min(1e-6).log()).sum()
            area = area + share.sum()
    return total / area.clamp_min(1.0)
