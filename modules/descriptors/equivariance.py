"""Equivariance losses under random smooth warps (:class:`core.warps.RandomWarp`: an affine map plus a
thin-plate spline).

Coordinates are normalised to ``[-1, 1]`` (x right, y down, ``align_corners=True``), as everywhere in
:mod:`modules.descriptors`. A warp ``T`` maps points of the *warped* image to the original:
``warped(p) = image(T(p))``, so a detector ``d`` is equivariant when ``T(d(warped)) = d(image)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.warps import RandomWarp


def equivariance_losses(keypoints: Tensor, warped_keypoints: Tensor, warp: RandomWarp,
                        jacobians: Tensor | None = None, warped_jacobians: Tensor | None = None) -> dict[str, Tensor]:
    """FOMM's equivariance terms for keypoints of an image and of its warped copy.

    Args:
        keypoints: ``B×K×2`` keypoints of the image.
        warped_keypoints: ``B×K×2`` keypoints of ``warp.image(image)``.
        warp: the warp.
        jacobians, warped_jacobians: ``B×K×2×2`` local Jacobians of both, or ``None``.

    Returns:
        ``equivariance``: mean ``|T(k') − k|``; with Jacobians also ``jacobian``: mean
        ``|I − J⁻¹ · dT(k') · J'|``.
    """
    terms = {"equivariance": (warp.points(warped_keypoints) - keypoints).abs().mean()}
    if jacobians is not None and warped_jacobians is not None:
        transported = warp.jacobian(warped_keypoints) @ warped_jacobians
        normed = torch.linalg.solve(jacobians, transported)
        terms["jacobian"] = (torch.eye(2, device=normed.device, dtype=normed.dtype) - normed).abs().mean()
    return terms
