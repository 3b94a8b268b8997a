"""``SemanticDescriptor``: a light face-parsing network (timm encoder + small decoder) whose soft region maps
and per-region statistics describe the motion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from torch import Tensor, nn

from core.errors import UserFacingError
from core.vocabulary import REGIONS
from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from modules.pretrained import InputNormalisation, create_pretrained_timm_model, load_descriptor_weights

STATISTICS = ("area", "centroid_x", "centroid_y", "spread_x", "spread_y")


def region_statistics(probabilities: Tensor) -> tuple[Tensor, Tensor]:
    """Per-region area, centroid and spread of soft region maps.

    Args:
        probabilities: ``B×R×h×w`` region probabilities (summing to 1 over R).

    Returns:
        ``B×R×5`` statistics in :data:`STATISTICS` order — area as the fraction of the image, centroid and
        spread (standard deviation) in normalised coordinates ``[-1, 1]`` — and the centroids ``B×R×2``.
    """
    grid = create_meshgrid(*probabilities.shape[-2:], normalized_coordinates=True, device=probabilities.device, dtype=probabilities.dtype)
    grid = grid[0].permute(2, 0, 1)  # 2×h×w, (x, y)
    mass = probabilities.sum(dim=(-2, -1)).clamp_min(1e-6)  # B×R
    centroid = torch.einsum("brhw,chw->brc", probabilities, grid) / mass[..., None]
    second = torch.einsum("brhw,chw->brc", probabilities, grid**2) / mass[..., None]
    spread = (second - centroid**2).clamp_min(1e-8).sqrt()
    area = probabilities.mean(dim=(-2, -1))
    return torch.cat([area[..., None], centroid, spread], dim=-1), centroid


class SemanticDescriptor(MotionDescriptor):
    """Soft face-region maps from a small timm encoder with a feature-pyramid decoder.

    The regions are the data's labels (:data:`~core.vocabulary.REGIONS`: background, face, left/right eye,
    left/right brow, mouth, hair, body). Trained by cross-entropy on ``driving_regions`` where the batch has
    them (puppet data and rendered Live2D clips do), or loaded frozen from a checkpoint.

    Args:
        encoder: a timm model name with ``features_only`` support (e.g. ``mobilenetv3_small_100``,
            ``resnet18``).
        pretrained: start the encoder from pretrained weights (hub or ``weights_path``).
        weights_path: local encoder weights file (see :func:`~modules.pretrained.create_pretrained_timm_model`).
        input_size: frames are resized to ``input_size²`` (a multiple of 16).
        decoder_width: channels of the decoder.
        segmentation_weight: weight of the cross-entropy loss on ``driving_regions`` (0: not trained by labels).
        checkpoint: load this descriptor's weights from a file: an AnimatorModule checkpoint (its
            ``descriptor.`` weights) or a saved descriptor state dict.
        frozen: keep the weights fixed (use with ``checkpoint``).

    Returns (from ``forward``): ``maps`` ``B×R×(input_size/4)²`` region probabilities, ``vector``
    ``B×5(R−1)`` (area, centroid, spread of every region but background), ``keypoints`` ``B×(R−1)×2`` the
    region centroids in ``[-1, 1]``.
    """

    def __init__(
        self,
        encoder: str = "mobilenetv3_small_100",
        pretrained: bool = False,
        weights_path: str | None = None,
        input_size: int = 96,
        decoder_width: int = 32,
        segmentation_weight: float = 1.0,
        checkpoint: str | None = None,
        frozen: bool = False,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.input_size, self.segmentation_weight, self.frozen = input_size, segmentation_weight, frozen
        self.num_regions = len(REGIONS)
        self.encoder = create_pretrained_timm_model(encoder, pretrained, weights_path, features_only=True, out_indices=(1, 2, 3))
        self.normalise = InputNormalisation.for_model(self.encoder)
        self.laterals = nn.ModuleList(nn.Conv2d(c, decoder_width, 1) for c in self.encoder.feature_info.channels())
        self.fuse = nn.Sequential(
            nn.Conv2d(decoder_width, decoder_width, 3, padding=1), nn.GroupNorm(8, decoder_width), nn.SiLU(inplace=True),
            nn.Conv2d(decoder_width, self.num_regions, 1),
        )
        if checkpoint is not None:
            load_descriptor_weights(self, checkpoint)
        self.requires_grad_(not frozen)
        self.train(not frozen)

    @property
    def spec(self) -> MotionSpec:
        regions = self.num_regions - 1
        return MotionSpec(vector_dim=len(STATISTICS) * regions, map_channels=self.num_regions, num_keypoints=regions)

    def train(self, mode: bool = True) -> SemanticDescriptor:
        return super().train(mode and not self.frozen)

    def logits(self, frames: Tensor) -> Tensor:
        """Region logits ``B×R×(input_size/4)²`` for frames ``B×3×H×W`` in ``[0, 1]``."""
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        features = self.encoder(self.normalise(x))
        size = (self.input_size // 4, self.input_size // 4)
        fused = sum(F.interpolate(lateral(f), size=size, mode="bilinear", align_corners=False) for lateral, f in zip(self.laterals, features))
        return self.fuse(fused)

    def forward(self, frames: Tensor) -> Motion:
        probabilities = self.logits(frames).softmax(dim=1)
        statistics, centroids = region_statistics(probabilities[:, 1:])
        return Motion(vector=statistics.flatten(1), maps=probabilities, keypoints=centroids)

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weighted cross-entropy (``segmentation``) between the region maps and ``batch["driving_regions"]``."""
        if self.segmentation_weight <= 0:
            return {}
        if "driving_regions" not in batch:
            raise UserFacingError(
                "SemanticDescriptor learns from region maps, but the batches have no 'driving_regions' (data without "
                "ground truth, e.g. imported video); load a trained one frozen (checkpoint=..., frozen=true) or set "
                "segmentation_weight=0"
            )
        labels = F.interpolate(batch["driving_regions"][:, None].float(), size=motion.maps.shape[-2:], mode="nearest")[:, 0].long()
        return {"segmentation": self.segmentation_weight * F.nll_loss(motion.maps.clamp_min(1e-6).log(), labels)}
