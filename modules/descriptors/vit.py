"""``ViTDescriptor``: DINOv2 / timm ViT patch features pooled over facial regions (a fixed grid, or the soft
regions of another descriptor: semantic face maps or keypoint heatmaps)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from modules.pretrained import InputNormalisation, create_pretrained_timm_model


class ViTDescriptor(MotionDescriptor):
    """Patch tokens of a timm ViT, average-pooled over face regions.

    Regions are either a fixed ``grid×grid`` layout or, with ``regions``, the maps of another descriptor used as
    soft pooling weights: :class:`~modules.descriptors.SemanticDescriptor` (one pooled feature per face
    region) or :class:`~modules.descriptors.KeypointDescriptor` (one per keypoint heatmap). The region
    descriptor's keypoints pass through, so keypoint-driven backbones work with it.

    Args:
        model_name: any timm ViT; the default is DINOv2 ViT-S/14.
        pretrained: load pretrained weights (timm's hub path, or ``weights_path``); ``False`` is random init
            for smoke tests.
        weights_path: local weights file used instead of the hub (see :func:`create_pretrained_timm_model`).
        input_size: frames are resized to ``input_size²`` (a multiple of the patch size).
        grid: regions per side of the fixed grid (used when ``regions`` is not given).
        frozen: keep the ViT's weights fixed (default) — it is then in eval mode and gets no gradients.
        projection_dim: if set, a trainable 1×1 projection of the pooled features to this many channels.
        regions: a descriptor whose maps (``B×R×h×w``, non-negative) are the pooling regions; it is trained
            with its own losses if it is trainable.

    Returns (from ``forward``), with C = embed dim or ``projection_dim``: on the grid, ``maps``
    ``B×C×grid×grid`` and ``vector`` ``B×(C·grid²)``; over regions, ``vector`` ``B×(C·R)`` and ``maps``
    ``B×C×p×p`` at patch resolution (each region's feature spread back over its region), plus the region
    descriptor's ``keypoints``.
    """

    def __init__(
        self,
        model_name: str = "vit_small_patch14_dinov2.lvd142m",
        pretrained: bool = True,
        weights_path: str | None = None,
        input_size: int = 112,
        grid: int = 4,
        frozen: bool = True,
        projection_dim: int | None = None,
        regions: MotionDescriptor | None = None,
    ) -> None:
        super().__init__()
        self.vit = create_pretrained_timm_model(model_name, pretrained, weights_path, num_classes=0, img_size=input_size)
        patch = self.vit.patch_embed.patch_size[0]
        if input_size % patch:
            raise ValueError(f"input_size {input_size} must be a multiple of {model_name}'s patch size {patch}")
        if regions is None and not 1 <= grid <= input_size // patch:
            raise ValueError(f"grid must be between 1 and {input_size // patch} patches, got {grid}")
        self.input_size, self.grid, self.frozen = input_size, grid, frozen
        self.vit.requires_grad_(not frozen)
        self.vit.train(not frozen)
        self.normalise = InputNormalisation.for_model(self.vit)
        embed_dim = self.vit.num_features
        self.projection = nn.Conv2d(embed_dim, projection_dim, 1) if projection_dim else None
        self.channels = projection_dim or embed_dim
        self.regions = regions
        if regions is not None and not regions.spec.map_channels:
            raise ValueError(f"{type(regions).__name__} gives no maps to pool over")

    @property
    def spec(self) -> MotionSpec:
        if self.regions is None:
            return MotionSpec(vector_dim=self.channels * self.grid**2, map_channels=self.channels)
        region = self.regions.spec
        return MotionSpec(vector_dim=self.channels * region.map_channels, map_channels=self.channels, num_keypoints=region.num_keypoints)

    def train(self, mode: bool = True) -> ViTDescriptor:
        super().train(mode)
        if self.frozen:
            self.vit.eval()
        return self

    def patch_features(self, frames: Tensor) -> Tensor:
        """Patch tokens as a map ``B×C×(input_size/patch)²`` for frames ``B×3×H×W`` in ``[0, 1]``."""
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        tokens = self.vit.forward_features(self.normalise(x))[:, self.vit.num_prefix_tokens :]
        side = self.input_size // self.vit.patch_embed.patch_size[0]
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)

    def forward(self, frames: Tensor) -> Motion:
        features = self.patch_features(frames)
        if self.projection is not None:
            features = self.projection(features)
        if self.regions is None:
            pooled = F.adaptive_avg_pool2d(features, self.grid)
            return Motion(vector=pooled.flatten(1), maps=pooled)
        region_motion = self.regions(frames)
        weights = F.interpolate(region_motion.maps, size=features.shape[-2:], mode="area")  # B×R×p×p
        pooled = torch.einsum("bchw,brhw->bcr", features, weights) / weights.sum(dim=(-2, -1))[:, None].clamp_min(1e-6)
        coverage = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-6)
        splat = torch.einsum("bcr,brhw->bchw", pooled, coverage)
        return Motion(vector=pooled.flatten(1), maps=splat, keypoints=region_motion.keypoints)

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The region descriptor's own losses when it is trained (its maps are recomputed for them)."""
        if self.regions is None or not self.regions.trainable:
            return {}
        return self.regions.auxiliary_losses(frames, self.regions(frames), batch)
