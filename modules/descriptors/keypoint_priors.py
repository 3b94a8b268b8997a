"""Priors that keep unsupervised keypoints apart and local (Zhang et al., "Unsupervised Discovery of Object
Landmarks as Structural Representations", CVPR 2018: concentration and separation).

Without them, keypoints trained by reconstruction and equivariance for the few thousand steps a CPU budget allows
collapse onto one point: with the default keypoints + warping configs, 480 s at 64² on Live2D clips, all ten sit
within a pixel of the character's centroid (spread 3 px over frames), their heatmaps spread over the character —
one global motion with ten Jacobians rather than ten parts (README, Quality).

Coordinates are normalised to ``[-1, 1]`` (x right, y down, ``align_corners=True``), as everywhere in
:mod:`modules.descriptors`; heatmaps are spatial-softmax probabilities over a ``h×w`` grid spanning that square.
"""

from __future__ import annotations

import torch
from kornia.geometry import create_meshgrid
from torch import Tensor


def concentration_loss(probabilities: Tensor) -> Tensor:
    """Mean spatial variance of keypoint heatmaps: small when each heatmap is one local peak.

    Args:
        probabilities: ``B×K×h×w`` heatmaps, each summing to 1.

    Returns:
        The mean over ``B`` and ``K`` of ``E|p − E p|²`` (normalised units², the variance of x plus that of y): 0 for
        a single cell, 2/3 for a heatmap uniform over the square (0.76 on a 16×16 grid).
    """
    grid = create_meshgrid(*probabilities.shape[-2:], normalized_coordinates=True, device=probabilities.device,
                           dtype=probabilities.dtype)[0]  # h×w×2
    mean = torch.einsum("bkhw,hwc->bkc", probabilities, grid)
    second = torch.einsum("bkhw,hw->bk", probabilities, grid.square().sum(-1))
    return (second - mean.square().sum(-1)).mean()


def separation_loss(keypoints: Tensor, std: float) -> Tensor:
    """Mean Gaussian proximity of distinct keypoints: pushes keypoints closer than about ``2·std`` apart.

    Args:
        keypoints: ``B×K×2`` normalised, ``K ≥ 2``.
        std: distance scale in normalised units.

    Returns:
        The mean over ``B`` and the ``K·(K−1)`` ordered pairs ``i ≠ j`` of ``exp(−|k_i − k_j|² / (2·std²))``: 1 when
        all keypoints coincide, → 0 when they are far apart.
    """
    count = keypoints.shape[1]
    if count < 2:
        raise ValueError(f"separation needs at least 2 keypoints, got {count}")
    squared = (keypoints[:, :, None] - keypoints[:, None]).square().sum(-1)  # not cdist: its gradient at 0 is NaN
    proximity = torch.exp(-squared / (2.0 * std * std))
    off_diagonal = 1.0 - torch.eye(count, device=keypoints.device, dtype=keypoints.dtype)
    return (proximity * off_diagonal).sum(dim=(1, 2)).mean() / (count * (count - 1))
