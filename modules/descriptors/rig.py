"""``RigDescriptor``: a frame's Live2D rig parameters (head angles, eyes, gaze, brows, mouth), read by a small timm
encoder that the clips' ground-truth parameters supervise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.parameters import PARAMETER_NAMES, parameter_bounds
from datamodules.puppet import KEYPOINT_NAMES
from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from modules.pretrained import InputNormalisation, create_pretrained_timm_model


def normalise_rig_parameters(values: Tensor) -> Tensor:
    """Raw standard parameters ``...×P`` (:data:`~datamodules.parameters.PARAMETER_NAMES` order) → ``[-1, 1]``
    per parameter (minimum → −1, maximum → 1; NaN stays NaN)."""
    low, high = (torch.as_tensor(b, device=values.device, dtype=values.dtype) for b in parameter_bounds())
    return (values - low) / (high - low) * 2.0 - 1.0


def masked_parameter_loss(predicted: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Smooth-L1 between predicted and true normalised parameters over the known entries only.

    Args:
        predicted: ``B×P`` normalised parameters.
        target: ``B×P`` normalised parameters; NaN entries are unknown.
        mask: ``B×P`` bool, false where the character lacks the parameter.

    Returns:
        The mean over known entries (0 with the graph kept when none is known).
    """
    known = mask & target.isfinite()
    if not known.any():
        return predicted.sum() * 0.0
    return F.smooth_l1_loss(predicted[known], target[known], beta=0.05)


class RigDescriptor(MotionDescriptor):
    """The standard rig parameters of a frame, regressed by a timm encoder (ResNet-10-T by default), and the 12
    facial landmarks the data marks (:data:`~datamodules.puppet.KEYPOINT_NAMES`: eyes, irises, brows, mouth, nose,
    chin) as keypoints for a backbone's warp.

    The vector *is* the parameters (``[-1, 1]`` each, :data:`~datamodules.parameters.PARAMETER_NAMES` order), so
    it is meant to say nothing about who is drawn: absolute cross-identity transfer needs no relative trick, and
    anything that reads the standard parameters (a human face's geometric reading, a Live2D replay) can drive an
    animator built on it through :meth:`motion_from_vector`. The parameter loss anchors every entry to its
    parameter; the animator's losses reach the encoder too (as for every trainable descriptor), and a motion
    loss on the prediction asks the *output* to read as the driving parameters. Parameters a character lacks
    (``driving_param_mask`` false) and unknown values (NaN: imported footage) are left out of the loss, not
    treated as zero targets; data with no known parameter at all is refused before training
    (:attr:`needs_parameters`).

    Args:
        encoder: a timm classification model name (its head is replaced by ``P`` outputs).
        pretrained: start from pretrained weights (hub or ``weights_path``).
        weights_path: local encoder weights file (see :func:`~modules.pretrained.create_pretrained_timm_model`).
        input_size: frames are resized to ``input_size²`` (a multiple of 16).
        parameter_weight: weight of the parameter loss (``descriptor/parameters``).
        keypoint_weight: weight of the landmark loss (``descriptor/keypoints``: smooth-L1 on normalised
            coordinates against ``driving_keypoints`` where the data has them); 0: no landmarks.

    Returns (from ``forward``): ``vector`` ``B×P``, the normalised parameters, and with landmarks ``keypoints``
    ``B×12×2`` in ``[-1, 1]``; no maps. The landmarks are where the face's parts are, so they do describe the
    face's shape: absolute transfer of them carries the driver's shape, relative transfer only its change.
    """

    needs_parameters = True
    vector_is_parameters = True

    def __init__(self, encoder: str = "resnet10t", pretrained: bool = False, weights_path: str | None = None,
                 input_size: int = 64, parameter_weight: float = 1.0, keypoint_weight: float = 1.0) -> None:
        super().__init__()
        if input_size % 16 or input_size <= 0:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        if parameter_weight <= 0:
            raise ValueError(f"parameter_weight must be positive (the parameters are all that trains this descriptor), got {parameter_weight}")
        if keypoint_weight < 0:
            raise ValueError(f"keypoint_weight must be non-negative, got {keypoint_weight}")
        self.input_size, self.parameter_weight, self.keypoint_weight = input_size, parameter_weight, keypoint_weight
        self.encoder = create_pretrained_timm_model(encoder, pretrained, weights_path, num_classes=0)
        self.normalise = InputNormalisation.for_model(self.encoder)
        self.parameter_head = nn.Linear(self.encoder.num_features, len(PARAMETER_NAMES))
        self.num_keypoints = len(KEYPOINT_NAMES) if keypoint_weight > 0 else 0
        self.keypoint_head = nn.Linear(self.encoder.num_features, 2 * self.num_keypoints) if self.num_keypoints else None

    @property
    def spec(self) -> MotionSpec:
        return MotionSpec(vector_dim=len(PARAMETER_NAMES), map_channels=0, num_keypoints=self.num_keypoints)

    def forward(self, frames: Tensor) -> Motion:
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        features = self.encoder(self.normalise(x))
        keypoints = None if self.keypoint_head is None else torch.tanh(self.keypoint_head(features)).view(-1, self.num_keypoints, 2)
        return Motion(vector=self.parameter_head(features), keypoints=keypoints)

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """The motion of normalised parameters ``B×P`` (e.g. :func:`normalise_rig_parameters` of a replay), without
        landmarks (parameters do not say where a face's parts are): use it relatively, where the portrait keeps its
        own landmarks (:meth:`Motion.relative`)."""
        return Motion(vector=vector)

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weighted ``parameters`` loss against ``batch["driving_params"]`` (masked by ``driving_param_mask``) and
        ``keypoints`` loss against ``batch["driving_keypoints"]`` (pixels of ``frames``) where present."""
        target = normalise_rig_parameters(batch["driving_params"].to(frames.dtype))
        mask = batch.get("driving_param_mask", torch.ones_like(target, dtype=torch.bool))
        terms = {"parameters": self.parameter_weight * masked_parameter_loss(motion.vector, target, mask)}
        if motion.keypoints is not None and "driving_keypoints" in batch:
            points = batch["driving_keypoints"].to(frames.dtype) / (frames.shape[-1] - 1) * 2.0 - 1.0
            terms["keypoints"] = self.keypoint_weight * F.smooth_l1_loss(motion.keypoints, points, beta=0.05)
        return terms
