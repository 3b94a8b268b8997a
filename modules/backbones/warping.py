"""``WarpingGenerator``: FOMM/TPSMM-style animation by warping — sparse keypoint motions combined into a dense
motion field with an occlusion map, source features warped by it and decoded (or, with ``refine`` off, the
portrait warped by the dense motion alone)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid
from kornia.geometry.subpix import render_gaussian2d
from kornia.geometry.transform import warp_points_tps
from torch import Tensor, nn

from modules.backbones.base import AnimatorBackbone, Generated
from modules.backbones.part_assignment import part_assignment_loss
from modules.descriptors.base import Motion, MotionSpec


def _block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.GroupNorm(min(8, out_channels), out_channels), nn.SiLU(inplace=True))


def sparse_motions(grid: Tensor, source: Motion, driving: Motion) -> Tensor:
    """Per-keypoint backward flows: where each driving-frame location comes from in the source.

    Args:
        grid: ``h×w×2`` normalised coordinates of the output (driving) frame.
        source, driving: motions with ``keypoints`` ``B×K×2`` (and optionally ``jacobians`` ``B×K×2×2``).

    Returns:
        ``B×(K+1)×h×w×2`` sampling grids: the identity (background) first, then for keypoint k
        ``z ↦ s_k + J_k (z − d_k)`` with ``J_k = J_s,k · J_d,k⁻¹`` (the identity without Jacobians).
    """
    z = grid[None, None]  # 1×1×h×w×2
    offset = z - driving.keypoints[:, :, None, None]  # B×K×h×w×2
    if source.jacobians is not None and driving.jacobians is not None:
        jacobian = source.jacobians @ torch.linalg.inv(driving.jacobians)  # B×K×2×2
        offset = torch.einsum("bkij,bkhwj->bkhwi", jacobian, offset)
    flows = source.keypoints[:, :, None, None] + offset
    return torch.cat([z.expand(flows.shape[0], 1, *flows.shape[2:]), flows], dim=1)


def fit_thin_plate_spline(controls: Tensor, targets: Tensor, regularisation: float = 1e-3) -> tuple[Tensor, Tensor]:
    """The thin-plate spline through ``controls`` ``B×N×2`` onto ``targets`` ``B×N×2``, in the form kornia's
    ``warp_points_tps(points, controls, kernel, affine)`` evaluates: ``f(p) = a0 + p·A + Σ_i w_i U(|p − c_i|)``,
    ``U(r) = r² log r``.

    The kernel is the usual one between the control points (kornia's ``get_tps_transform`` builds it between the
    controls and the targets instead, which is not the interpolating spline). The spline is fitted to the
    displacements ``targets − controls`` as a regularised (quasi-definite) system: ``regularisation`` on the
    kernel's diagonal (a smoothing spline, ``f(c_i)`` within about that of ``t_i``) and ``regularisation²`` on the
    affine block, so that coinciding or collinear keypoints — as an untrained detector gives — still yield a
    finite map close to a translation instead of a singular system.

    Returns:
        ``kernel`` ``B×N×2`` and ``affine`` ``B×3×2`` (translation, then the rows for x and y).
    """
    batch, count = controls.shape[:2]
    centre = controls.mean(dim=1, keepdim=True)  # fitted about the centroid: collapsed points then leave A at 0
    squared = torch.cdist(controls, controls).square()
    kernel = torch.where(squared > 0, 0.5 * squared * squared.clamp_min(1e-12).log(), torch.zeros_like(squared))
    eye = torch.eye(count + 3, device=controls.device, dtype=controls.dtype)
    polynomial = torch.cat([torch.ones_like(controls[..., :1]), controls - centre], -1)  # B×N×3
    system = torch.cat([torch.cat([kernel, polynomial], -1), torch.cat([polynomial.transpose(1, 2), controls.new_zeros(batch, 3, 3)], -1)], 1)
    system = system + torch.cat([torch.full((count,), regularisation), torch.full((3,), -regularisation ** 2)]).to(eye) * eye
    weights = torch.linalg.solve(system, torch.cat([targets - controls, targets.new_zeros(batch, 3, 2)], 1))
    matrix = weights[:, count + 1 :] + torch.eye(2, device=controls.device, dtype=controls.dtype)  # displacement + identity
    translation = weights[:, count : count + 1] + centre - centre @ matrix  # a0 + (p − m)·A + m − m·I, in p's form
    return weights[:, :count], torch.cat([translation, matrix], 1)


def spline_motions(grid: Tensor, source: Motion, driving: Motion, points_per_spline: int) -> Tensor:
    """TPSMM's sparse motions: the keypoints in consecutive groups of ``points_per_spline``, each group's backward
    flow the thin-plate spline that takes its driving keypoints onto its source keypoints.

    Args:
        grid: ``h×w×2`` normalised coordinates of the output (driving) frame.
        source, driving: motions with ``keypoints`` ``B×K×2``, ``K`` a multiple of ``points_per_spline`` (Jacobians
            are not used).

    Returns:
        ``B×(G+1)×h×w×2`` sampling grids, ``G = K / points_per_spline``: the identity (background) first, then one
        per group.
    """
    batch, count = driving.keypoints.shape[:2]
    groups = count // points_per_spline
    controls = driving.keypoints.reshape(batch * groups, points_per_spline, 2)
    kernel, affine = fit_thin_plate_spline(controls, source.keypoints.reshape(batch * groups, points_per_spline, 2))
    points = grid.reshape(1, -1, 2).expand(batch * groups, -1, -1)
    flows = warp_points_tps(points, controls, kernel, affine).reshape(batch, groups, *grid.shape)
    z = grid[None, None].expand(batch, 1, *grid.shape)
    return torch.cat([z, flows], dim=1)


class DenseMotion(nn.Module):
    """Combines sparse motions into a dense backward flow and an occlusion map (a small hourglass).

    The sparse motions are FOMM's, one first-order motion per keypoint (:func:`sparse_motions`), or with
    ``points_per_spline > 0`` TPSMM's, one thin-plate spline per group of that many keypoints
    (:func:`spline_motions`). Input per location: for every sparse motion the source warped by it, and the
    difference of the driving and source Gaussians of every keypoint; output: softmax weights over the motions
    (the identity first) and, with ``occlusion`` (the default), a sigmoid occlusion map.

    Raises:
        ValueError: ``num_keypoints`` is not a multiple of ``points_per_spline``, or a group has under 3 points.
    """

    def __init__(self, num_keypoints: int, channels: int, width: int, keypoint_std: float, points_per_spline: int = 0,
                 occlusion: bool = True) -> None:
        super().__init__()
        if points_per_spline and (points_per_spline < 3 or num_keypoints % points_per_spline):
            raise ValueError(f"thin-plate-spline motions need groups of at least 3 keypoints that divide the descriptor's "
                             f"{num_keypoints}, got points_per_spline={points_per_spline}")
        self.keypoint_std, self.points_per_spline = keypoint_std, points_per_spline
        motions = (num_keypoints // points_per_spline if points_per_spline else num_keypoints) + 1
        inputs = motions * channels + num_keypoints + 1
        self.down1, self.down2 = _block(inputs, width), _block(width, 2 * width)
        self.up1, self.up0 = _block(2 * width + width, width), _block(width + inputs, width)
        self.mask = nn.Conv2d(width, motions, 7, padding=3)
        self.occlusion = nn.Conv2d(width, 1, 7, padding=3) if occlusion else None

    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> tuple[Tensor, Tensor | None, Tensor]:
        """Dense flow ``B×h×w×2`` (normalised sampling grid), occlusion ``B×1×h×w`` in ``[0, 1]`` (``None`` when built
        without it) and the weights
        ``B×(M+1)×h×w`` of the sparse motions (softmax over them; 0 is the identity) at the resolution of
        ``source`` (``B×C×h×w``)."""
        batch, channels, height, width = source.shape
        grid = create_meshgrid(height, width, normalized_coordinates=True, device=source.device, dtype=source.dtype)[0]
        if self.points_per_spline:
            flows = spline_motions(grid, source_motion, driving_motion, self.points_per_spline)  # B×(M+1)×h×w×2
        else:
            flows = sparse_motions(grid, source_motion, driving_motion)
        motions = flows.shape[1]
        deformed = F.grid_sample(source.repeat_interleave(motions, 0), flows.flatten(0, 1), align_corners=True, padding_mode="border")
        std = torch.full_like(driving_motion.keypoints, self.keypoint_std)
        heat = render_gaussian2d(driving_motion.keypoints, std, (height, width), True) - render_gaussian2d(source_motion.keypoints, std, (height, width), True)
        heat = heat / heat.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-6)
        x = torch.cat([deformed.view(batch, motions * channels, height, width), torch.zeros_like(heat[:, :1]), heat], 1)
        h1 = self.down1(F.avg_pool2d(x, 2))
        h2 = self.down2(F.avg_pool2d(h1, 2))
        u1 = self.up1(torch.cat([F.interpolate(h2, size=h1.shape[-2:], mode="nearest"), h1], 1))
        u0 = self.up0(torch.cat([F.interpolate(u1, size=x.shape[-2:], mode="nearest"), x], 1))
        mask = self.mask(u0).softmax(dim=1)  # B×(K+1)×h×w
        dense = (mask[..., None] * flows).sum(dim=1)
        return dense, None if self.occlusion is None else torch.sigmoid(self.occlusion(u0)), mask

    def at_image_size(self, source: Tensor, source_motion: Motion, driving_motion: Motion, scale: float) -> tuple[Tensor, Tensor | None, Tensor]:
        """:meth:`forward` on ``source`` ``B×C×H×W`` reduced to ``scale`` of its size (antialiased), with the flow
        ``B×H×W×2`` and occlusion ``B×1×H×W`` brought back to ``H×W`` (the weights stay at the reduced size)."""
        small = F.interpolate(source, scale_factor=scale, mode="bilinear", align_corners=False, antialias=True)
        flow, occlusion, weights = self(small, source_motion, driving_motion)
        size = source.shape[-2:]
        flow = F.interpolate(flow.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
        if occlusion is not None:
            occlusion = F.interpolate(occlusion, size=size, mode="bilinear", align_corners=False)
        return flow, occlusion, weights


class ResBlock(nn.Module):
    """Pre-activation residual block."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(min(8, channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(min(8, channels), channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class WarpingGenerator(AnimatorBackbone):
    """Warp-and-refine animator for descriptors that locate points (keypoints, region centroids).

    The dense motion field is estimated at ``motion_scale`` of the image, the source's encoded features (¼
    resolution) are warped by it and masked by the occlusion map, refined by residual blocks and decoded into a
    correction of the warped source image: ``prediction = warp(source) + decoder(...)`` (the correction starts
    at zero, so an untrained generator already moves pixels with the keypoints).

    With ``refine`` off the prediction is the warped source alone: no encoder, occlusion map, residual blocks or
    decoder (a tenth of the parameters). Trained with plain L1 on Live2D clips at 64², the refined generator learns
    to switch its correction off (its occlusion map averages 0.003–0.006, the prediction equals the warped source to
    five digits), yet the correction's networks take ~90 % of its time at 256². Without them it trains ~2.5× as
    many steps per second and animates 256² 5–6× as fast; at equal steps self-reenactment matches, at equal time
    it is worse (README, Quality).

    Args:
        motion: what the descriptor emits (given by the AnimatorModule); needs ``num_keypoints > 0``.
        channels: image channels (given by the AnimatorModule).
        width: channels of the first encoder level (×2 per level, two levels).
        motion_width: channels of the dense-motion hourglass.
        motion_scale: resolution of the dense-motion estimate relative to the image (a power of ½).
        keypoint_std: standard deviation of the keypoint Gaussians fed to the dense-motion network (normalised).
        num_blocks: residual blocks on the warped features.
        points_per_spline: 0 for FOMM's sparse motions (one first-order motion per keypoint, with the descriptor's
            Jacobians where it gives them); ``N ≥ 3`` for TPSMM's (one thin-plate spline per group of ``N``
            keypoints; the descriptor's keypoint count must be a multiple of ``N`` and it must give no Jacobians).
        part_weight: weight of :func:`~modules.backbones.part_assignment.part_assignment_loss` on the dense motion's
            weights of the sparse motions (``backbone/parts``; needs region maps in the batch, none is computed
            without): background and body stay, the head moves — with named landmarks (a landmark-supervised or
            rig descriptor) each eye, brow and the mouth with its own. 0 turns it off.

    ``generate`` returns the map ``motion_weights`` ``B×(M+1)×h×w``: the dense motion's softmax weights of the identity
    (0) and the sparse motions at ``motion_scale`` of the image size.

    Raises:
        ValueError: the descriptor gives no keypoints (e.g. a grid-pooled ViT); use the FiLM U-Net for it. Or
            spline motions with a descriptor that gives Jacobians (they would be ignored) or a keypoint count
            they do not divide. Or a negative ``part_weight``, or a positive one with spline motions (their weights
            are per group of keypoints, not per landmark).
        refine: decode the warped, occlusion-masked source features into a correction of the warped source (FOMM's
            generator); ``False``: the warped source is the prediction (``width`` and ``num_blocks`` are then unused).
    """

    size_multiple = 4

    def __init__(self, motion: MotionSpec, channels: int = 3, width: int = 32, motion_width: int = 32,
                 motion_scale: float = 0.25, keypoint_std: float = 0.1, num_blocks: int = 2, points_per_spline: int = 0,
                 part_weight: float = 0.0, refine: bool = True) -> None:
        super().__init__()
        if motion.num_keypoints < 1:
            raise ValueError(
                "WarpingGenerator needs a descriptor that locates points (KeypointDescriptor, SemanticDescriptor, or "
                "ViTDescriptor pooling over their regions); this one gives none — use modules.backbones.FiLMUNet"
            )
        if points_per_spline and motion.jacobians:
            raise ValueError("WarpingGenerator with points_per_spline > 0 moves keypoints by thin-plate splines and would ignore "
                             "the descriptor's Jacobians; set the descriptor's jacobians: false")
        if part_weight < 0 or (part_weight > 0 and points_per_spline):
            raise ValueError(f"part_weight must be non-negative and needs FOMM's sparse motions (points_per_spline: 0), got "
                             f"part_weight={part_weight} with points_per_spline={points_per_spline}")
        self.motion_scale, self.part_weight, self.keypoint_names = motion_scale, part_weight, motion.keypoint_names
        self.refine = refine
        self.dense_motion = DenseMotion(motion.num_keypoints, channels, motion_width, keypoint_std, points_per_spline, occlusion=refine)
        if refine:
            self._build_refinement(channels, width, num_blocks)

    def _build_refinement(self, channels: int, width: int, num_blocks: int) -> None:
        """The encoder, residual blocks, decoder and zero-initialised head of the correction."""
        self.encoder = nn.Sequential(
            _block(channels, width), nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), _block(2 * width, 2 * width),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), _block(4 * width, 4 * width),
        )
        self.blocks = nn.Sequential(*(ResBlock(4 * width) for _ in range(num_blocks)))
        self.decoder = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), _block(4 * width, 2 * width),
            nn.Upsample(scale_factor=2, mode="nearest"), _block(2 * width, width),
        )
        self.head = nn.Conv2d(width + channels, channels, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def generate(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Generated:
        self.check_size(*source.shape[-2:])
        flow, occlusion, weights = self.dense_motion.at_image_size(source, source_motion, driving_motion, self.motion_scale)
        warped_image = F.grid_sample(source, flow, align_corners=True, padding_mode="border")
        if not self.refine:
            return Generated(warped_image, {"motion_weights": weights})
        features = self.encoder(source)
        quarter = features.shape[-2:]
        flow_quarter = F.interpolate(flow.permute(0, 3, 1, 2), size=quarter, mode="bilinear", align_corners=True).permute(0, 2, 3, 1)
        warped = F.grid_sample(features, flow_quarter, align_corners=True, padding_mode="border")
        warped = warped * F.interpolate(occlusion, size=quarter, mode="bilinear", align_corners=False)
        decoded = self.decoder(self.blocks(warped))
        return Generated(warped_image + self.head(torch.cat([decoded, warped_image * occlusion], 1)), {"motion_weights": weights})

    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        return self.generate(source, source_motion, driving_motion).prediction

    def auxiliary_losses(self, generated: Generated, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """``parts`` (:func:`~modules.backbones.part_assignment.part_assignment_loss`), weighted; none with
        ``part_weight`` 0 or without ``source_regions`` and ``driving_regions``."""
        if self.part_weight <= 0 or "source_regions" not in batch or "driving_regions" not in batch:
            return {}
        return {"parts": self.part_weight * part_assignment_loss(
            generated.maps["motion_weights"], batch["source_regions"], batch["driving_regions"], self.keypoint_names)}
