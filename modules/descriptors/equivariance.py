"""Random smooth warps for equivariance losses: an affine map plus a thin-plate spline (kornia).

Coordinates are normalised to ``[-1, 1]`` (x right, y down, ``align_corners=True``), as everywhere in
:mod:`modules.descriptors`. A :class:`RandomWarp` ``T`` maps points of the *warped* image to the original:
``warped(p) = image(T(p))``, so a detector ``d`` is equivariant when ``T(d(warped)) = d(image)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from kornia.geometry.transform import warp_image_tps, warp_points_tps
from kornia.geometry import create_meshgrid
from torch import Tensor


@dataclass
class RandomWarp:
    """A batch of warps ``T(p) = a0 + p·A + Σ_i w_i U(|p − c_i|)`` (kornia's thin-plate-spline form).

    Attributes:
        centers: ``B×N×2`` spline control points.
        kernel_weights: ``B×N×2`` spline weights ``w_i``.
        affine_weights: ``B×3×2``: translation ``a0`` then the 2×2 matrix ``A`` (rows for x and y).
    """

    centers: Tensor
    kernel_weights: Tensor
    affine_weights: Tensor

    @classmethod
    def sample(cls, batch: int, affine_std: float = 0.05, tps_std: float = 0.005, grid: int = 5,
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> RandomWarp:
        """Draw ``batch`` warps: the affine part is the identity plus Gaussian noise of ``affine_std`` (matrix
        and translation), the spline has ``grid×grid`` control points with Gaussian weights of ``tps_std``."""
        eye = torch.eye(2, device=device, dtype=dtype).expand(batch, 2, 2)
        affine = torch.cat([torch.zeros(batch, 1, 2, device=device, dtype=dtype), eye], 1)
        affine = affine + affine_std * torch.randn(batch, 3, 2, device=device, dtype=dtype)
        centers = create_meshgrid(grid, grid, normalized_coordinates=True, device=device, dtype=dtype).reshape(1, -1, 2).expand(batch, -1, -1)
        weights = tps_std * torch.randn(batch, grid * grid, 2, device=device, dtype=dtype)
        return cls(centers.contiguous(), weights, affine)

    def points(self, points: Tensor) -> Tensor:
        """``T(points)`` for points ``B×K×2``."""
        return warp_points_tps(points, self.centers, self.kernel_weights, self.affine_weights)

    def image(self, image: Tensor) -> Tensor:
        """The warped image ``B×C×H×W`` (``warped(p) = image(T(p))``; outside pixels repeat the border)."""
        return warp_image_tps(image, self.centers, self.kernel_weights, self.affine_weights, align_corners=True, padding_mode="border")

    def jacobian(self, points: Tensor, step: float = 1e-3) -> Tensor:
        """``dT/dp`` at ``points`` ``B×K×2`` → ``B×K×2×2`` (central differences; columns are d/dx, d/dy)."""
        offsets = torch.tensor([[step, 0.0], [0.0, step]], device=points.device, dtype=points.dtype)
        columns = [(self.points(points + o) - self.points(points - o)) / (2 * step) for o in offsets]
        return torch.stack(columns, dim=-1)


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
