"""``RigDescriptor``: a frame's Live2D rig parameters (head angles, eyes, gaze, brows, mouth), read by a small timm
encoder that the clips' ground-truth parameters supervise."""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.vocabulary import KEYPOINT_NAMES, PARAMETER_NAMES, parameter_bounds
from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from modules.descriptors.landmarks import landmark_loss
from modules.pretrained import InputNormalisation, create_pretrained_timm_model

_EYE_PARTS = {"left_eye": "ParamEyeLOpen", "left_iris": "ParamEyeLOpen", "right_eye": "ParamEyeROpen", "right_iris": "ParamEyeROpen"}
_MOUTH_PARTS = ("mouth_left", "mouth_right", "mouth_top", "mouth_bottom")


def normalise_rig_parameters(values: Tensor) -> Tensor:
    """Raw standard parameters ``...×P`` (:data:`~core.vocabulary.PARAMETER_NAMES` order) → ``[-1, 1]``
    per parameter (minimum → −1, maximum → 1; NaN stays NaN)."""
    low, high = (torch.as_tensor(b, device=values.device, dtype=values.dtype) for b in parameter_bounds())
    return (values - low) / (high - low) * 2.0 - 1.0


def part_jacobians(parameters: Tensor, closed_eye_scale: float = 0.7, closed_mouth_scale: float = 1.0) -> Tensor:
    """Local Jacobians at the landmarks that the rig parameters imply: each eye (and its iris) is squashed
    vertically as it closes, the mouth stretched vertically as it opens; every other landmark keeps the identity.

    The vertical scale of an eye is ``closed_eye_scale + (1 − closed_eye_scale)·open`` with ``open`` =
    ``ParamEye{L,R}Open`` in ``[0, 1]``; of the mouth ``closed_mouth_scale + (1 − closed_mouth_scale)·open`` with
    ``open`` = ``ParamMouthOpenY``. Only ratios matter to a warp (``J_source · J_driving⁻¹``,
    :func:`~modules.backbones.warping.sparse_motions`): an open-eyed portrait driven to a closed eye samples the
    eye's rows from ``1 / closed_eye_scale`` times farther away, and a closed mouth driven open spreads its lip
    line over ``1 / closed_mouth_scale`` times its height. It is a warp of the portrait's own pixels, so it needs
    nothing learned about the character — and it is only the first-order part of an expression: measured with
    true landmarks and parameters on the 17 characters of ``../shared/live2d`` (eye pixels of a closed-eye frame,
    the open-eyed frame squashed vs copied), a squash to 0.7 leaves 0.96 of the copy's error on average (0.5:
    0.97; 0.15: 1.43, as rows are then sampled from beyond the eye); stretching a closed mouth made its pixels
    worse at every scale (0.15–0.5: 1.21–1.25 of the copy's error; 0.7: 1.02) — an open mouth's inside is not in
    the portrait, it has to be synthesised. Hence the defaults: eyes 0.7, mouth 1 (no stretch).

    Args:
        parameters: ``B×P`` normalised parameters (:func:`normalise_rig_parameters`; values outside ``[-1, 1]`` are
            clamped).
        closed_eye_scale, closed_mouth_scale: the vertical scale of a closed eye and of a closed mouth, in ``(0, 1]``.

    Returns:
        ``B×K×2×2`` Jacobians in :data:`~core.vocabulary.KEYPOINT_NAMES` order (x, y).
    """
    opening = (parameters.clamp(-1.0, 1.0) + 1.0) / 2.0
    scales = torch.ones(parameters.shape[0], len(KEYPOINT_NAMES), dtype=parameters.dtype, device=parameters.device)
    for name, parameter in _EYE_PARTS.items():
        scales[:, KEYPOINT_NAMES.index(name)] = closed_eye_scale + (1.0 - closed_eye_scale) * opening[:, PARAMETER_NAMES.index(parameter)]
    mouth = closed_mouth_scale + (1.0 - closed_mouth_scale) * opening[:, PARAMETER_NAMES.index("ParamMouthOpenY")]
    for name in _MOUTH_PARTS:
        scales[:, KEYPOINT_NAMES.index(name)] = mouth
    jacobians = torch.zeros(*scales.shape, 2, 2, dtype=parameters.dtype, device=parameters.device)
    jacobians[..., 0, 0] = 1.0
    jacobians[..., 1, 1] = scales
    return jacobians


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
    facial landmarks the data marks (:data:`~core.vocabulary.KEYPOINT_NAMES`: eyes, irises, brows, mouth, nose,
    chin) as keypoints for a backbone's warp.

    The vector *is* the parameters (``[-1, 1]`` each, :data:`~core.vocabulary.PARAMETER_NAMES` order), so
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
        expression_jacobians: give the landmarks the Jacobians the parameters imply (:func:`part_jacobians`:
            eyes squash as they close, the mouth can stretch as it opens), so a warping backbone narrows closing
            eyes by moving the portrait's own pixels; needs landmarks.
        closed_eye_scale, closed_mouth_scale: those Jacobians' vertical scale of a closed eye and of a closed
            mouth (1: none; measured defaults in :func:`part_jacobians`).

    Returns (from ``forward``): ``vector`` ``B×P``, the normalised parameters, and with landmarks ``keypoints``
    ``B×12×2`` in ``[-1, 1]`` (and ``jacobians`` ``B×12×2×2`` with ``expression_jacobians``); no maps. The landmarks are where the face's parts are, so they do describe the
    face's shape: absolute transfer of them carries the driver's shape, relative transfer only its change.
    """

    needs_parameters = True
    vector_is_parameters = True

    def __init__(self, encoder: str = "resnet10t", pretrained: bool = False, weights_path: str | None = None,
                 input_size: int = 64, parameter_weight: float = 1.0, keypoint_weight: float = 1.0,
                 expression_jacobians: bool = False, closed_eye_scale: float = 0.7, closed_mouth_scale: float = 1.0) -> None:
        super().__init__()
        if input_size % 16 or input_size <= 0:
            raise ValueError(f"input_size must be a positive multiple of 16, got {input_size}")
        if parameter_weight <= 0:
            raise ValueError(f"parameter_weight must be positive (the parameters are all that trains this descriptor), got {parameter_weight}")
        if keypoint_weight < 0:
            raise ValueError(f"keypoint_weight must be non-negative, got {keypoint_weight}")
        if expression_jacobians and keypoint_weight == 0:
            raise ValueError("expression_jacobians needs the landmarks (keypoint_weight > 0): the Jacobians sit at them")
        if not (0 < closed_eye_scale <= 1 and 0 < closed_mouth_scale <= 1):
            raise ValueError(f"closed_eye_scale and closed_mouth_scale must lie in (0, 1], got {closed_eye_scale} and {closed_mouth_scale}")
        self.expression_jacobians, self.closed_eye_scale, self.closed_mouth_scale = expression_jacobians, closed_eye_scale, closed_mouth_scale
        self.input_size, self.parameter_weight, self.keypoint_weight = input_size, parameter_weight, keypoint_weight
        self.encoder = create_pretrained_timm_model(encoder, pretrained, weights_path, num_classes=0)
        self.normalise = InputNormalisation.for_model(self.encoder)
        self.parameter_head = nn.Linear(self.encoder.num_features, len(PARAMETER_NAMES))
        self.num_keypoints = len(KEYPOINT_NAMES) if keypoint_weight > 0 else 0
        self.keypoint_head = nn.Linear(self.encoder.num_features, 2 * self.num_keypoints) if self.num_keypoints else None

    @property
    def spec(self) -> MotionSpec:
        return MotionSpec(vector_dim=len(PARAMETER_NAMES), map_channels=0, num_keypoints=self.num_keypoints,
                          jacobians=self.expression_jacobians, keypoint_names=KEYPOINT_NAMES if self.num_keypoints else ())

    def _jacobians(self, vector: Tensor) -> Tensor | None:
        return part_jacobians(vector, self.closed_eye_scale, self.closed_mouth_scale) if self.expression_jacobians else None

    def forward(self, frames: Tensor) -> Motion:
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        features = self.encoder(self.normalise(x))
        keypoints = None if self.keypoint_head is None else torch.tanh(self.keypoint_head(features)).view(-1, self.num_keypoints, 2)
        vector = self.parameter_head(features)
        return Motion(vector=vector, keypoints=keypoints, jacobians=self._jacobians(vector))

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """The motion of normalised parameters ``B×P`` (e.g. :func:`normalise_rig_parameters` of a replay), without
        landmarks (parameters do not say where a face's parts are): use it relatively, where the portrait keeps its
        own landmarks (:meth:`Motion.relative`); with ``expression_jacobians`` it carries their Jacobians."""
        return Motion(vector=vector, jacobians=self._jacobians(vector))

    def with_parameters(self, motion: Motion, params: Tensor, known: Tensor | None = None) -> Motion:
        """``motion`` (as read: its landmarks kept) with raw true parameters ``params`` ``B×P`` in place of the
        reading where they are known (``known`` ``B×P`` bool, and finite), and the Jacobians they imply."""
        usable = params.isfinite() if known is None else known & params.isfinite()
        vector = torch.where(usable, normalise_rig_parameters(params.to(motion.vector.dtype)), motion.vector)
        return replace(motion, vector=vector, jacobians=self._jacobians(vector))

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Weighted ``parameters`` loss against ``batch["driving_params"]`` (masked by ``driving_param_mask``) and
        ``keypoints`` loss against ``batch["driving_keypoints"]`` (pixels of ``frames``) where present."""
        target = normalise_rig_parameters(batch["driving_params"].to(frames.dtype))
        mask = batch.get("driving_param_mask", torch.ones_like(target, dtype=torch.bool))
        terms = {"parameters": self.parameter_weight * masked_parameter_loss(motion.vector, target, mask)}
        if motion.keypoints is not None and "driving_keypoints" in batch:
            terms["keypoints"] = self.keypoint_weight * landmark_loss(motion.keypoints, batch["driving_keypoints"], frames.shape[-1])
        return terms
