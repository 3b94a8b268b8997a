"""``ExpressionPoseGenerator``: separates what *moves* from what *changes*.

Head pose moves pixels — a dense warp restricted to the head by a learned mask, so body and background stay;
eyes, brows and mouth *change* — new content (a closed eyelid, an open mouth) synthesised where the warp has
nothing to offer, blended in by its own change mask. The split follows talking-head-anime's rotator and face
morpher (appearance flow + direct synthesis, combined by alpha), in one FiLM U-Net pass::

    flow, warp_mask, colour, change_mask = heads(FiLMUNet.trunk(source, motion_src, motion_drv))
    flow       = keypoint_flow(source, motion_src, motion_drv) + flow    # where the descriptor locates points
    warped     = grid_sample(source, identity + warp_mask · flow)        # only the head moves
    prediction = (1 − change_mask) · warped + change_mask · colour       # expression synthesised

For descriptors that locate points (keypoints, the rig descriptor's landmarks) the head flow starts from the
FOMM-style dense motion of the keypoints (:class:`~modules.backbones.warping.DenseMotion`) and the trunk learns a
correction: a flow predicted from motion codes alone fits the few training characters and does not carry over
to new faces (measured: on held-out characters such a warp did worse than no warp at all), while keypoint
displacements move any face.

Flows are backward (where each output pixel comes from in the source), in normalised coordinates ``[-1, 1]``
(``grid_sample(align_corners=True)``, as the descriptors' keypoints). The colour is predicted as a correction of
the warped image, from a zero start, so an untrained generator returns the source exactly.

Where the batch has region maps (puppets, rendered Live2D clips), auxiliary losses teach the masks what the
data knows: the warp mask should cover the head (:data:`~core.vocabulary.HEAD_REGIONS` of the source or the
driving frame) and nothing else; the change mask should stay off the body and background; and, for descriptors
whose keypoints are named landmarks, each eye, brow and the mouth should move with its own landmarks' motion
(:data:`PART_LANDMARKS`) — with the rig descriptor's expression Jacobians that motion narrows a closing eye
(:func:`~modules.descriptors.rig.part_jacobians`), for any character; what no warp holds is left to synthesis.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from torch import Tensor, nn

from core.vocabulary import HEAD_REGIONS
from modules.backbones.base import Generated
from modules.backbones.film_unet import FiLMUNet, _group_norm
from modules.backbones.part_assignment import part_assignment_loss
from modules.backbones.warping import DenseMotion
from modules.descriptors.base import Motion, MotionSpec
from modules.losses import region_mask

class ExpressionPoseGenerator(FiLMUNet):
    """Head warp + expression synthesis on a FiLM U-Net trunk; works with every descriptor (it reads the motion
    vectors through FiLM and as constant input channels, the motion maps where there are any at its input, and
    the keypoints where there are any through their dense motion).

    Args:
        motion: what the descriptor emits (given by the AnimatorModule).
        channels: image channels (given by the AnimatorModule).
        width, depth, embed_dim, motion_map_channels, fold, block, motion_input_channels: the trunk, as for
            :class:`FiLMUNet` (motion vectors joined at the input by default).
        change_bias: initial logit of the change mask (−2: about 12 % of the synthesised colour where it differs).
        synthesis: how the colour correction and change mask reach full resolution: ``"shuffle"`` — ``fold²``
            values per trunk pixel, pixel-shuffled (full detail; at 128² its 4-pixel period showed as a checkerboard
            over the eyes), or ``"smooth"`` — one value per trunk pixel, bilinearly upsampled like the flow.
        flow_scale: the flow head's output is multiplied by this (normalised units): an optimizer's step then moves
            the flow by a fraction of a pixel rather than by whole pixels in whatever direction sparse edge gradients
            point.
        keypoint_flow: start the head flow from the keypoints' dense motion when the descriptor locates points.
        motion_width, motion_scale, keypoint_std: that dense-motion network (as for the warping generator).
        warp_mask_weight: weight of the binary cross-entropy between the warp mask and the head regions
            (``backbone/warp_mask``; needs region maps, 0 turns it off).
        change_outside_weight: weight of the mean change mask outside the head regions (``backbone/change_outside``).
        part_weight: weight of :func:`~modules.backbones.part_assignment.part_assignment_loss` on the keypoint flow's
            motion weights (``backbone/parts``; needs region maps and the keypoint flow: with named landmarks, e.g. the
            rig descriptor's, each part moves with its own, with unsupervised keypoints the head moves and the rest
            stays; 0 turns it off).

    ``generate`` returns the maps ``flow`` ``B×2×H×W`` (backward offsets before masking), ``warp_mask`` and ``change_mask``
    ``B×1×H×W`` in ``[0, 1]`` and ``warped`` ``B×C×H×W`` (the source after the masked warp, before synthesis); with
    the keypoint flow also ``motion_weights`` ``B×(K+1)×h×w``, its weights of the sparse motions at ``motion_scale``
    of the image size.
    """

    def __init__(
        self,
        motion: MotionSpec,
        channels: int = 3,
        width: int = 32,
        depth: int = 3,
        embed_dim: int = 128,
        motion_map_channels: int = 16,
        fold: int = 4,
        block: Literal["residual", "convnext"] = "residual",
        motion_input_channels: int = 16,
        change_bias: float = -2.0,
        synthesis: Literal["shuffle", "smooth"] = "shuffle",
        flow_scale: float = 0.1,
        keypoint_flow: bool = True,
        motion_width: int = 16,
        motion_scale: float = 0.25,
        keypoint_std: float = 0.1,
        warp_mask_weight: float = 0.1,
        change_outside_weight: float = 0.1,
        part_weight: float = 0.0,
    ) -> None:
        super().__init__(motion, channels, width, depth, embed_dim, motion_map_channels, fold, block, motion_input_channels)
        if warp_mask_weight < 0 or change_outside_weight < 0 or part_weight < 0:
            raise ValueError(f"mask loss weights must be non-negative, got {warp_mask_weight}, {change_outside_weight} and {part_weight}")
        if flow_scale <= 0:
            raise ValueError(f"flow_scale must be positive, got {flow_scale}")
        if synthesis not in ("shuffle", "smooth"):
            raise ValueError(f"synthesis must be 'shuffle' or 'smooth', got {synthesis!r}")
        self.warp_mask_weight, self.change_outside_weight, self.flow_scale = warp_mask_weight, change_outside_weight, flow_scale
        trunk_width = self.stem.out_channels
        fine = (fold * fold if synthesis == "shuffle" else 1) * (channels + 1)  # colour correction and change-mask logit
        self.head = nn.Sequential(_group_norm(trunk_width), nn.SiLU(), nn.Conv2d(trunk_width, fine + 3, 3, padding=1))
        final = self.head[-1]
        nn.init.zeros_(final.weight)
        nn.init.zeros_(final.bias)
        with torch.no_grad():
            final.bias[:fine].view(channels + 1, -1)[channels] = change_bias  # pixel_shuffle: channel-major
        self._fine, self.synthesis = fine, synthesis
        self.motion_scale = motion_scale
        self.dense_motion = DenseMotion(motion.num_keypoints, channels, motion_width, keypoint_std) if keypoint_flow and motion.num_keypoints else None
        if part_weight > 0 and self.dense_motion is None:
            raise ValueError(f"part_weight={part_weight} needs the keypoint flow (keypoint_flow: true and a descriptor that "
                             "locates points); set it to 0 for this descriptor")
        self.keypoint_names, self.part_weight = motion.keypoint_names, part_weight

    def generate(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Generated:
        out = self.head(self.trunk(source, source_motion, driving_motion))
        size = source.shape[-2:]
        if self.synthesis == "shuffle":
            fine = F.pixel_shuffle(out[:, : self._fine], self.fold)
        else:
            fine = F.interpolate(out[:, : self._fine], size=size, mode="bilinear", align_corners=False)
        correction, change_mask = fine[:, :-1], torch.sigmoid(fine[:, -1:])
        coarse = F.interpolate(out[:, self._fine :], size=size, mode="bilinear", align_corners=False)
        flow, warp_mask = self.flow_scale * coarse[:, :2], torch.sigmoid(coarse[:, 2:])
        grid = create_meshgrid(*size, normalized_coordinates=True, device=source.device, dtype=source.dtype)
        maps = {}
        if self.dense_motion is not None:
            dense, _, maps["motion_weights"] = self.dense_motion.at_image_size(source, source_motion, driving_motion, self.motion_scale)
            flow = flow + (dense - grid).permute(0, 3, 1, 2)
        warped = F.grid_sample(source, grid + (warp_mask * flow).permute(0, 2, 3, 1), align_corners=True, padding_mode="border")
        prediction = warped + change_mask * correction  # (1 − m)·warped + m·colour, colour = warped + correction
        return Generated(prediction, {"flow": flow, "warp_mask": warp_mask, "change_mask": change_mask, "warped": warped, **maps})

    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        return self.generate(source, source_motion, driving_motion).prediction

    def auxiliary_losses(self, generated: Generated, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``warp_mask`` (BCE against the head regions of source ∪ driving), ``change_outside`` (mean change mask
        off the head) and ``parts`` (:func:`~modules.backbones.part_assignment.part_assignment_loss`), weighted; none without ``source_regions`` and
        ``driving_regions``."""
        if "source_regions" not in batch or "driving_regions" not in batch:
            return {}
        head = torch.maximum(region_mask(batch["source_regions"], HEAD_REGIONS), region_mask(batch["driving_regions"], HEAD_REGIONS))
        terms = {}
        if self.warp_mask_weight > 0:
            mask = generated.maps["warp_mask"].clamp(1e-6, 1 - 1e-6)
            terms["warp_mask"] = self.warp_mask_weight * F.binary_cross_entropy(mask, head)
        if self.change_outside_weight > 0:
            terms["change_outside"] = self.change_outside_weight * (generated.maps["change_mask"] * (1.0 - head)).mean()
        if self.part_weight > 0:
            terms["parts"] = self.part_weight * part_assignment_loss(
                generated.maps["motion_weights"], batch["source_regions"], batch["driving_regions"], self.keypoint_names)
        return terms
