"""Random smooth warps: an affine map plus a thin-plate spline (kornia), for equivariance losses and for shape
augmentation.

Coordinates are normalised to ``[-1, 1]`` (x right, y down, ``align_corners=True``). A :class:`RandomWarp` ``T``
maps points of the *warped* image to the original: ``warped(p) = image(T(p))``; a point ``q`` of the original is
found in the warped image at ``T⁻¹(q)`` (:meth:`RandomWarp.inverse_points`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.transform import warp_points_tps
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

    def image(self, image: Tensor, mode: str = "bilinear") -> Tensor:
        """The warped image ``B×C×H×W`` (``warped(p) = image(T(p))``; outside pixels repeat the border); ``mode``
        ``"nearest"`` for labels. Warp several images of one size with one call (stacked along ``C``): the spline
        is evaluated once per pixel per call."""
        height, width = image.shape[-2:]
        grid = create_meshgrid(height, width, normalized_coordinates=True, device=image.device, dtype=image.dtype)
        grid = self.points(grid.reshape(1, -1, 2).expand(image.shape[0], -1, -1)).reshape(-1, height, width, 2)
        return F.grid_sample(image, grid, mode=mode, align_corners=True, padding_mode="border")

    def inverse_points(self, points: Tensor, iterations: int = 8) -> Tensor:
        """``T⁻¹(points)`` for points ``B×K×2``: where points of the original lie in the warped image, by the
        fixed-point iteration ``p ← p − (T(p) − q)`` from ``p = q`` (converges for warps close to the identity,
        as the augmentation's are; no closed form exists for a spline)."""
        estimate = points
        for _ in range(iterations):
            estimate = estimate - (self.points(estimate) - points)
        return estimate

    def jacobian(self, points: Tensor, step: float = 1e-3) -> Tensor:
        """``dT/dp`` at ``points`` ``B×K×2`` → ``B×K×2×2`` (central differences; columns are d/dx, d/dy)."""
        offsets = torch.tensor([[step, 0.0], [0.0, step]], device=points.device, dtype=points.dtype)
        columns = [(self.points(points + o) - self.points(points - o)) / (2 * step) for o in offsets]
        return torch.stack(columns, dim=-1)
