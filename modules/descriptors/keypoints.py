"""``KeypointDescriptor``: unsupervised keypoints from heatmaps (FOMM-style), trained with the animator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.subpix import render_gaussian2d, spatial_soft_argmax2d
from torch import Tensor, nn

from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.SiLU(inplace=True),
    )


class KeypointDescriptor(MotionDescriptor):
    """K keypoints from a small hourglass: heatmaps → spatial soft-argmax → Gaussian maps.

    Args:
        num_keypoints: ``K``.
        width: channels of the first hourglass level (doubles per level, three levels).
        input_size: frames are resized to ``input_size²`` before the hourglass (a multiple of 8).
        temperature: soft-argmax temperature; smaller gives sharper, more local keypoints.
        gaussian_std: standard deviation of the emitted Gaussian maps, in normalised units (image width = 2).

    Returns (from ``forward``): ``vector`` ``B×2K`` (keypoints flattened), ``maps`` ``B×K×(input_size/4)²``
    (Gaussians peaking at 1 on each keypoint), ``keypoints`` ``B×K×2`` in ``[-1, 1]``.
    """

    def __init__(
        self,
        num_keypoints: int = 10,
        width: int = 16,
        input_size: int = 64,
        temperature: float = 0.1,
        gaussian_std: float = 0.1,
    ) -> None:
        super().__init__()
        if input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {input_size}")
        if temperature <= 0 or gaussian_std <= 0:
            raise ValueError(f"temperature and gaussian_std must be positive, got {temperature} and {gaussian_std}")
        self.num_keypoints, self.input_size = num_keypoints, input_size
        self.temperature, self.gaussian_std = temperature, gaussian_std
        w = width
        self.down1 = nn.Sequential(_conv_block(3, w), _conv_block(w, w, stride=2))  # /2
        self.down2 = _conv_block(w, 2 * w, stride=2)  # /4
        self.down3 = _conv_block(2 * w, 4 * w, stride=2)  # /8
        self.up = _conv_block(4 * w + 2 * w, 2 * w)  # back at /4, with the skip
        self.head = nn.Conv2d(2 * w, num_keypoints, 3, padding=1)

    @property
    def spec(self) -> MotionSpec:
        return MotionSpec(vector_dim=2 * self.num_keypoints, map_channels=self.num_keypoints)

    def heatmaps(self, frames: Tensor) -> Tensor:
        """Raw keypoint logits ``B×K×(input_size/4)²`` for frames ``B×3×H×W`` in ``[0, 1]``."""
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        x1 = self.down1(x * 2.0 - 1.0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        up = F.interpolate(x3, size=x2.shape[-2:], mode="nearest")
        return self.head(self.up(torch.cat([up, x2], dim=1)))

    def forward(self, frames: Tensor) -> Motion:
        logits = self.heatmaps(frames)
        keypoints = spatial_soft_argmax2d(logits, temperature=self.temperature, normalized_coordinates=True)
        std = torch.full_like(keypoints, self.gaussian_std)
        gaussians = render_gaussian2d(keypoints, std, tuple(logits.shape[-2:]), normalized_coordinates=True)
        gaussians = gaussians / gaussians.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)
        return Motion(vector=keypoints.flatten(1), maps=gaussians, keypoints=keypoints)
