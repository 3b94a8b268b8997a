"""``KeypointDescriptor``: unsupervised keypoints from heatmaps (FOMM-style) with local Jacobians and an
equivariance loss, trained with the animator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.augmentation import ColorJiggle
from kornia.filters import sobel
from kornia.geometry.subpix import render_gaussian2d, spatial_expectation2d, spatial_softmax2d
from torch import Tensor, nn

from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from core.vocabulary import KEYPOINT_NAMES
from core.warps import RandomWarp
from modules.descriptors.equivariance import equivariance_losses
from modules.descriptors.keypoint_priors import concentration_loss, separation_loss
from modules.descriptors.landmarks import landmark_loss


def _conv_block(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.GroupNorm(min(8, out_channels), out_channels),
        nn.SiLU(inplace=True),
    )


class KeypointDescriptor(MotionDescriptor):
    """K keypoints from a small hourglass: heatmaps → spatial softmax → expected position → Gaussian maps.

    Args:
        num_keypoints: ``K``.
        width: channels of the first hourglass level (doubles per level, three levels).
        input_size: frames are resized to ``input_size²`` before the hourglass (a multiple of 8).
        temperature: softmax temperature of the heatmaps; smaller gives sharper, more local keypoints.
        gaussian_std: standard deviation of the emitted Gaussian maps, in normalised units (image width = 2).
        jacobians: also estimate a local 2×2 Jacobian per keypoint (heatmap-weighted average of a 4-channel
            map, starting at the identity), as FOMM does for first-order motion.
        equivariance_weight: weight of the equivariance loss ``|T(k(warp(x))) − k(x)|`` under random
            affine + thin-plate-spline warps (0 turns it off).
        jacobian_weight: weight of the Jacobian equivariance loss (needs ``jacobians``).
        warp_affine_std: noise of the random warps' affine part.
        warp_tps_std: noise of the random warps' spline weights.
        warp_color_jitter: strength (0–1) of colour and hue jitter applied to the warped copy, so keypoints
            must also ignore flat-colour changes typical of anime art (0 turns it off).
        edge_emphasis: give the hourglass the Sobel edge magnitude as a fourth channel (line art carries most of
            the geometry in anime frames).
        landmark_weight: weight of the landmark loss (``descriptor/landmarks``, :func:`~modules.descriptors.landmarks.
            landmark_loss`): the first 12 keypoints become the data's named landmarks (eyes, irises, brows, mouth,
            nose, chin — :data:`~core.vocabulary.KEYPOINT_NAMES`), supervised by ``driving_keypoints`` where the
            batch has them; the other ``num_keypoints − 12`` stay unsupervised. Needs ``num_keypoints ≥ 12``; 0:
            all unsupervised.
        concentration_weight: weight of :func:`~modules.descriptors.keypoint_priors.concentration_loss`
            (``descriptor/concentration``) on the heatmaps of the randomly warped copy: each heatmap one local peak.
            0 turns it off.
        separation_weight: weight of :func:`~modules.descriptors.keypoint_priors.separation_loss`
            (``descriptor/separation``): keypoints apart by more than about ``2·separation_std``. 0 turns it off.
        separation_std: its distance scale, normalised units (image width = 2).

    Returns (from ``forward``): ``vector`` ``B×2K`` (keypoints flattened), ``maps`` ``B×K×(input_size/4)²``
    (Gaussians peaking at 1 on each keypoint), ``keypoints`` ``B×K×2`` in ``[-1, 1]`` and, with ``jacobians``,
    ``jacobians`` ``B×K×2×2``.
    """

    def __init__(
        self,
        num_keypoints: int = 10,
        width: int = 16,
        input_size: int = 64,
        temperature: float = 0.1,
        gaussian_std: float = 0.1,
        jacobians: bool = False,
        equivariance_weight: float = 0.0,
        jacobian_weight: float = 0.0,
        warp_affine_std: float = 0.05,
        warp_tps_std: float = 0.005,
        warp_color_jitter: float = 0.0,
        edge_emphasis: bool = False,
        landmark_weight: float = 0.0,
        concentration_weight: float = 0.0,
        separation_weight: float = 0.0,
        separation_std: float = 0.1,
    ) -> None:
        super().__init__()
        if input_size % 8:
            raise ValueError(f"input_size must be a multiple of 8, got {input_size}")
        if temperature <= 0 or gaussian_std <= 0:
            raise ValueError(f"temperature and gaussian_std must be positive, got {temperature} and {gaussian_std}")
        if jacobian_weight > 0 and not jacobians:
            raise ValueError("jacobian_weight > 0 needs jacobians=true")
        if landmark_weight < 0 or (landmark_weight > 0 and num_keypoints < len(KEYPOINT_NAMES)):
            raise ValueError(f"landmark_weight must be non-negative and needs num_keypoints ≥ {len(KEYPOINT_NAMES)} (one per "
                             f"named landmark), got {landmark_weight} with num_keypoints={num_keypoints}")
        if concentration_weight < 0 or separation_weight < 0 or separation_std <= 0 or (separation_weight > 0 and num_keypoints < 2):
            raise ValueError(f"concentration_weight and separation_weight must be non-negative and separation_std positive "
                             f"(separation needs 2 or more keypoints), got {concentration_weight}, {separation_weight} and "
                             f"{separation_std} with num_keypoints={num_keypoints}")
        self.landmark_weight = landmark_weight
        self.concentration_weight, self.separation_weight, self.separation_std = concentration_weight, separation_weight, separation_std
        self.num_keypoints, self.input_size = num_keypoints, input_size
        self.temperature, self.gaussian_std, self.with_jacobians = temperature, gaussian_std, jacobians
        self.equivariance_weight, self.jacobian_weight = equivariance_weight, jacobian_weight
        self.warp_affine_std, self.warp_tps_std, self.edge_emphasis = warp_affine_std, warp_tps_std, edge_emphasis
        self.jitter = ColorJiggle(0.4 * warp_color_jitter, 0.4 * warp_color_jitter, 0.4 * warp_color_jitter, 0.5 * warp_color_jitter, p=1.0) if warp_color_jitter > 0 else None
        w = width
        self.down1 = nn.Sequential(_conv_block(4 if edge_emphasis else 3, w), _conv_block(w, w, stride=2))  # /2
        self.down2 = _conv_block(w, 2 * w, stride=2)  # /4
        self.down3 = _conv_block(2 * w, 4 * w, stride=2)  # /8
        self.up = _conv_block(4 * w + 2 * w, 2 * w)  # back at /4, with the skip
        self.head = nn.Conv2d(2 * w, num_keypoints, 3, padding=1)
        self.jacobian_head = nn.Conv2d(2 * w, 4 * num_keypoints, 3, padding=1) if jacobians else None
        if self.jacobian_head is not None:
            nn.init.zeros_(self.jacobian_head.weight)
            self.jacobian_head.bias.data.copy_(torch.tensor([1.0, 0.0, 0.0, 1.0]).repeat(num_keypoints))

    @property
    def spec(self) -> MotionSpec:
        names = ()
        if self.landmark_weight > 0:
            names = KEYPOINT_NAMES + tuple(f"free{i}" for i in range(self.num_keypoints - len(KEYPOINT_NAMES)))
        return MotionSpec(vector_dim=2 * self.num_keypoints, map_channels=self.num_keypoints,
                          num_keypoints=self.num_keypoints, jacobians=self.with_jacobians, keypoint_names=names)

    def features(self, frames: Tensor) -> Tensor:
        """Hourglass features ``B×2·width×(input_size/4)²`` for frames ``B×3×H×W`` in ``[0, 1]``."""
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        if self.edge_emphasis:
            x = torch.cat([x, sobel(x.mean(1, keepdim=True))], 1)
        x1 = self.down1(x * 2.0 - 1.0)
        x2 = self.down2(x1)
        x3 = self.down3(x2)
        up = F.interpolate(x3, size=x2.shape[-2:], mode="nearest")
        return self.up(torch.cat([up, x2], dim=1))

    def gaussians(self, keypoints: Tensor) -> Tensor:
        """Gaussian maps ``B×K×(input_size/4)²`` peaking at 1 on keypoints ``B×K×2``."""
        side = self.input_size // 4
        std = torch.full_like(keypoints, self.gaussian_std)
        gaussians = render_gaussian2d(keypoints, std, (side, side), normalized_coordinates=True)
        return gaussians / gaussians.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-12)

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """Keypoints from the flat vector, their Gaussian maps, identity Jacobians (when the descriptor has them)."""
        keypoints = vector.view(-1, self.num_keypoints, 2)
        jacobians = torch.eye(2, device=vector.device, dtype=vector.dtype).expand(len(keypoints), self.num_keypoints, 2, 2) if self.with_jacobians else None
        return Motion(vector=vector, maps=self.gaussians(keypoints), keypoints=keypoints, jacobians=jacobians)

    def forward(self, frames: Tensor) -> Motion:
        return self.locate(frames)[0]

    def locate(self, frames: Tensor) -> tuple[Motion, Tensor]:
        """The motion of ``frames`` and its heatmaps ``B×K×(input_size/4)²`` (spatial-softmax probabilities)."""
        features = self.features(frames)
        probabilities = spatial_softmax2d(self.head(features), temperature=torch.tensor(self.temperature))
        keypoints = spatial_expectation2d(probabilities, normalized_coordinates=True)
        gaussians = self.gaussians(keypoints)
        jacobians = None
        if self.jacobian_head is not None:
            maps = self.jacobian_head(features).unflatten(1, (self.num_keypoints, 4))
            jacobians = (maps * probabilities[:, :, None]).sum(dim=(-2, -1)).unflatten(-1, (2, 2))
        return Motion(vector=keypoints.flatten(1), maps=gaussians, keypoints=keypoints, jacobians=jacobians), probabilities

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weighted terms: ``landmarks`` against ``batch["driving_keypoints"]`` (pixels of ``frames``) where present,
        ``separation`` of the keypoints of ``frames``, and on a randomly warped copy of ``frames`` the equivariance
        terms (``equivariance``, ``jacobian``) and ``concentration`` of its heatmaps."""
        terms = {}
        if self.landmark_weight > 0 and "driving_keypoints" in batch:
            terms["landmarks"] = self.landmark_weight * landmark_loss(motion.keypoints, batch["driving_keypoints"], frames.shape[-1])
        if self.separation_weight > 0:
            terms["separation"] = self.separation_weight * separation_loss(motion.keypoints, self.separation_std)
        if self.equivariance_weight <= 0 and self.jacobian_weight <= 0 and self.concentration_weight <= 0:
            return terms
        warp = RandomWarp.sample(frames.shape[0], self.warp_affine_std, self.warp_tps_std, device=frames.device, dtype=frames.dtype)
        warped = warp.image(frames)
        if self.jitter is not None:
            warped = self.jitter(warped)
        moved, probabilities = self.locate(warped)
        if self.concentration_weight > 0:
            terms["concentration"] = self.concentration_weight * concentration_loss(probabilities)
        equivariance = equivariance_losses(motion.keypoints, moved.keypoints, warp, motion.jacobians, moved.jacobians)
        weights = {"equivariance": self.equivariance_weight, "jacobian": self.jacobian_weight}
        return terms | {name: weights[name] * value for name, value in equivariance.items() if weights[name] > 0}
