"""``RigDescriptor``: a frame's Live2D rig parameters (head angles, eyes, gaze, brows, mouth), read by a small timm
encoder that the clips' ground-truth parameters supervise."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from datamodules.parameters import PARAMETER_NAMES, parameter_bounds
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
    """The standard rig parameters of a frame, regressed by a timm encoder (ResNet-10-T by default).

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

    Returns (from ``forward``): ``vector`` ``B×P``, the normalised parameters; no maps or keypoints.
    """

    needs_parameters = True

    def __init__(self, encoder: str = "resnet10t", pretrained: bool = False, weights_path: str | None = None,
                 input_size: int = 64, parameter_weight: float = 1.0) -> None:
        super().__init__()
        if input_size % 16 or input_size <= 0:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        if parameter_weight <= 0:
            raise ValueError(f"parameter_weight must be positive (the parameters are all that trains this descriptor), got {parameter_weight}")
        self.input_size, self.parameter_weight = input_size, parameter_weight
        self.encoder = create_pretrained_timm_model(encoder, pretrained, weights_path, num_classes=len(PARAMETER_NAMES))
        self.normalise = InputNormalisation.for_model(self.encoder)

    @property
    def spec(self) -> MotionSpec:
        return MotionSpec(vector_dim=len(PARAMETER_NAMES), map_channels=0)

    def parameters_of(self, frames: Tensor) -> Tensor:
        """Normalised parameters ``B×P`` of frames ``B×3×H×W`` in ``[0, 1]``."""
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        return self.encoder(self.normalise(x))

    def forward(self, frames: Tensor) -> Motion:
        return Motion(vector=self.parameters_of(frames))

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """The motion of normalised parameters ``B×P`` (e.g. :func:`normalise_rig_parameters` of a replay)."""
        return Motion(vector=vector)

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weighted ``parameters`` loss against ``batch["driving_params"]`` (masked by ``driving_param_mask``)."""
        target = normalise_rig_parameters(batch["driving_params"].to(frames.dtype))
        mask = batch.get("driving_param_mask", torch.ones_like(target, dtype=torch.bool))
        return {"parameters": self.parameter_weight * masked_parameter_loss(motion.vector, target, mask)}
