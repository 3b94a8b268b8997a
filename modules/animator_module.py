"""``AnimatorModule``: the LightningModule that composes descriptor, optional adapter and backbone.

Training step, for a batch of (portrait ``source``, ``driving`` frame) pairs of the same character::

    motion_src, motion_drv = descriptor(source), descriptor(driving)
    prediction             = backbone(source, motion_src, motion_drv)      # should equal driving
    identity               = backbone(source, motion_src, motion_src)      # should equal source

(a cross-identity training pair's prediction should equal its ``target``, the portrait's character in the driver's
pose, not the driver's frame) and the weighted loss terms of :class:`~modules.losses.LossWeights`, plus the
descriptor's and the backbone's own (``descriptor/…``, ``backbone/…``, ``reader/…`` for a ``parameter_reader``,
already weighted by their settings). Validation and test score the clamped prediction against ``batch["target"]``
(the driving frame in self-reenactment, the ground-truth frame in cross-identity pairs) with torchmetrics' L1, PSNR
and SSIM. Under the evaluation protocols
(:mod:`datamodules.protocols`) test logs ``test/<protocol>/<split>/<metric>``, where cross-identity pairs are
animated twice: ``cross_absolute`` (the driver's motion as is) and ``cross_relative`` (the driver's change since
its first frame applied to the portrait; with ``adapt_movement_scale`` its keypoint movement is scaled to the
portrait's face size); test steps return the predictions for evaluation callbacks.

Inference, the one API commands, benchmarks and export use (a stream of driving frames, portrait read once)::

    portrait = animator.prepare(image)                                 # 1×3×H×W in [0, 1]
    frame    = animator.animate_frame(portrait, driving_frame)         # absolute
    first    = animator.prepare_reference(first_frame)                # the driver's neutral frame, read once
    frame    = animator.animate_frame(portrait, driving_frame, first)  # relative to it
    frame    = animator.animate_motion(portrait, animator.motion_from_vector(vector), reference)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from core.errors import CheckpointError, NonFiniteError, UserFacingError
from core.vocabulary import EXPRESSION_REGIONS
from modules.backbones.base import BackboneFactory
from modules.descriptors.base import Motion, MotionDescriptor, movement_scale
from modules.descriptors.rig import normalise_rig_parameters
from modules.parameter_map import ParameterAffineMap
from modules.registration import MotionType, Window, affine_keypoint, reference_keypoint, register_affine
from modules.losses import (
    LossWeights,
    MotionLossKind,
    PerceptualLoss,
    descriptor_delta_loss,
    pyramid_error,
    region_error,
    region_mask,
    residual_tv_loss,
    rgb_residual_motion_loss,
)

NonFinitePolicy = Literal["stop", "skip"]


@dataclass(frozen=True)
class PreparedPortrait:
    """A portrait ready to animate (:meth:`AnimatorModule.prepare`).

    Attributes:
        image: ``B×3×H×W`` in ``[0, 1]``.
        motion: the descriptor's reading of ``image``.
    """

    image: Tensor
    motion: Motion


@dataclass(frozen=True)
class PreparedReference:
    """The driver's reference frame of relative transfer (a clip's first frame), read once for a stream of driving
    frames (:meth:`AnimatorModule.prepare_reference`).

    Attributes:
        image: ``B×3×H×W`` in ``[0, 1]`` (the frame the driving frames are registered with).
        motion: the descriptor's reading of ``image``.
        parameters: the parameter reader's vector for ``image``, ``B×P`` (``None`` without ``parameter_reader``).
    """

    image: Tensor
    motion: Motion
    parameters: Tensor | None = None


def non_finite_entries(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors in ``tensors`` holding a NaN or an infinity (other values are ignored).

    One device synchronisation for all of them (it runs on every training step), not one per tensor."""
    floating = {name: value for name, value in tensors.items() if isinstance(value, Tensor) and value.is_floating_point()}
    if not floating:
        return []
    device = next(iter(floating.values())).device
    finite = torch.stack([torch.isfinite(value).all().to(device) for value in floating.values()]).tolist()
    return [name for name, ok in zip(floating, finite) if not ok]


class AnimatorModule(LightningModule):
    """Animate a portrait from driving motion.

    Args:
        descriptor: the motion descriptor (frames → :class:`Motion`).
        backbone: the animator backbone, built here for the descriptor's :class:`MotionSpec` and ``channels``.
        adapter: optional module mapping another motion source (e.g. human face landmarks) into this
            descriptor's space; it is saved with the model and not trained by this module's loss.
        image_size: frame size the model is trained at (linked from the data).
        channels: image channels (linked from the data).
        losses: weight of each loss term.
        motion_loss: ``"descriptor_delta"`` (descriptor(prediction) vs descriptor(driving), as deltas from the
            source) or ``"rgb_residual"`` (blurred RGB residuals, the older form kept for comparison).
        rgb_blur_sigma: Gaussian sigma in pixels for ``"rgb_residual"``.
        reconstruction_beta: the reconstruction, identity and expression terms are smooth-L1 with this ``beta``
            (quadratic below it; images in ``[0, 1]``); 0 gives plain L1, which measurably trains copies of the
            portrait (see :func:`~modules.losses.pixel_error`).
        reconstruction_scales: the reconstruction and identity terms average the error over a Gaussian pyramid of
            this many levels (full size, ½, ¼, …; :func:`~modules.losses.pyramid_error`); 1: full size only.
        perceptual_weights: VGG-16 weights file; needed when ``losses.perceptual > 0``.
        adapt_movement_scale: in relative transfer, scale the driver's keypoint movement by the ratio of the
            portrait's keypoint spread to the driver's (FOMM's ``adapt_movement_scale``), so a small-faced driver
            does not under-move a large-faced portrait; no effect for descriptors without keypoints. Off by default:
            on held-out Live2D characters it made relative cross-identity L1 worse for every keypoint config
            measured (``benchmarks/quality.py``; README, Quality).
        teacher_forcing: in training, drive the backbone with the data's true parameters (where the character has
            them) in place of the descriptor's reading, landmarks still read — for descriptors whose vector is the
            parameters (:class:`~modules.descriptors.RigDescriptor`); the descriptor keeps learning from its own
            losses. The backbone then learns what a parameter change looks like from exact values, not from a
            reading that is still wrong early in training.
        registration: windows ``[x, y, half side]`` (normalised; ``[0, 0, 1]`` is the whole frame): for each, a keypoint
            added to the descriptor's whose first-order motion is the affine that registers that part of the driving
            frame with its reference (the portrait; in relative transfer the driver's first frame) by OpenCV's ECC
            (:mod:`modules.registration`) — a motion found without recognising the character; where ECC fails the keypoint
            stays still, and training logs the share of driving frames aligned (``train/registered``). Needs a descriptor
            with keypoints and Jacobians and a backbone that reads them (the warping generator). Driving by motion
            alone (a human face through the adapter, a parameter vector) has no frame to register, so there the
            added keypoints stay still. ``None`` or empty: none.
        registration_transfer: what ECC fits when a driving frame is registered with the driver's first frame in
            relative transfer (the driver's change, to be put on another character): ``"affine"``, as in training, or
            ``"euclidean"``, rotation and translation only — the stretch and shear of the driver's affine come from
            its own shape and expressions, which another character does not share.
        parameter_reader: with ``registration``, a descriptor whose vector is the rig parameters
            (:class:`~modules.descriptors.RigDescriptor`, landmarks not needed), trained alongside on the driving frames'
            true parameters (``reader/…`` terms; data with parameters needed). In relative transfer it reads the
            driver's parameter change, and a linear map fitted on the training pairs
            (:class:`~modules.parameter_map.ParameterAffineMap`: parameter change → each window's affine, the
            character's own) turns it into the motion an average character makes for it; the registration keypoints
            then move by a blend of that and the driver's registered change (``parameter_share``). The driver's
            pixels move as far as its own rig moves; the parameters say how far it turned, whoever turned.
        parameter_share: the share of the parameter map's affine in that blend (``[0, 1]``; 0: the driver's registered
            change only, 1: the parameters only; where ECC fails, the parameters only).
        non_finite: what a NaN or infinite loss term or gradient does: ``"stop"`` ends training with a message naming
            the step and the terms (nothing is saved from it), ``"skip"`` leaves the step out (no update) and counts
            it (``train/skipped_steps``), stopping after ``max_skipped_steps``. Either way no checkpoint with
            non-finite weights or metrics is written, and none is loaded (test, animate, resume).
        max_skipped_steps: under ``"skip"``, how many steps may be left out before training stops.
        optimizer: optimizer class with its settings (AdamW by default); the schedule lives in a callback.
    """

    def __init__(
        self,
        descriptor: MotionDescriptor,
        backbone: BackboneFactory,
        adapter: nn.Module | None = None,
        image_size: int = 128,
        channels: int = 3,
        losses: LossWeights = LossWeights(),
        motion_loss: MotionLossKind = "descriptor_delta",
        rgb_blur_sigma: float = 2.0,
        reconstruction_beta: float = 0.1,
        reconstruction_scales: int = 1,
        perceptual_weights: str | None = None,
        adapt_movement_scale: bool = False,
        teacher_forcing: bool = False,
        registration: list[Window] | None = None,
        registration_transfer: MotionType = "affine",
        parameter_reader: MotionDescriptor | None = None,
        parameter_share: float = 0.5,
        non_finite: NonFinitePolicy = "stop",
        max_skipped_steps: int = 20,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.descriptor = descriptor
        spec = descriptor.spec
        registration = [tuple(float(v) for v in window) for window in registration or []]
        if any(len(window) != 3 or window[2] <= 0 for window in registration):
            raise UserFacingError(f"model.registration takes windows [x, y, half side] with a positive half side (normalised; "
                                  f"[0, 0, 1] is the whole frame), got {registration}")
        if registration:
            if not spec.num_keypoints or not spec.jacobians:
                raise UserFacingError(f"model.registration needs a descriptor with keypoints and Jacobians (KeypointDescriptor with "
                                      f"jacobians: true), not {type(descriptor).__name__} with {spec.num_keypoints} keypoints and "
                                      f"jacobians={spec.jacobians}")
            names = tuple(f"registered{i}" for i in range(len(registration)))
            spec = replace(spec, num_keypoints=spec.num_keypoints + len(names), keypoint_names=spec.keypoint_names + names if spec.keypoint_names else ())
        if registration_transfer not in ("affine", "euclidean"):
            raise UserFacingError(f"model.registration_transfer must be 'affine' or 'euclidean', got {registration_transfer!r}")
        self.registration, self.registration_transfer = registration, registration_transfer
        if parameter_reader is not None and (not registration or not parameter_reader.vector_is_parameters):
            raise UserFacingError(f"model.parameter_reader needs model.registration and a descriptor whose vector is the rig parameters "
                                  f"(modules.descriptors.RigDescriptor), got registration={registration or None} and "
                                  f"{type(parameter_reader).__name__}")
        if not 0.0 <= parameter_share <= 1.0:
            raise UserFacingError(f"model.parameter_share must lie in [0, 1], got {parameter_share}")
        self.parameter_reader, self.parameter_share = parameter_reader, parameter_share
        self.parameter_map = ParameterAffineMap(parameter_reader.spec.vector_dim, len(registration)) if parameter_reader is not None else None
        self.last_registration_rate: float | None = None  # share of the last registered frames ECC aligned (logged in training)
        self.backbone = backbone(spec, channels)
        self.backbone.check_size(image_size, image_size)
        self.adapter = adapter
        self.image_size, self.channels = image_size, channels
        self.losses, self.motion_loss, self.rgb_blur_sigma = losses, motion_loss, rgb_blur_sigma
        self.adapt_movement_scale = adapt_movement_scale
        if teacher_forcing and not descriptor.vector_is_parameters:
            raise UserFacingError(f"model.teacher_forcing needs a descriptor whose vector is the rig parameters "
                                  f"(modules.descriptors.RigDescriptor), not {type(descriptor).__name__}")
        self.teacher_forcing = teacher_forcing
        if reconstruction_beta < 0:
            raise UserFacingError(f"model.reconstruction_beta must be non-negative (0: plain L1), got {reconstruction_beta}")
        self.reconstruction_beta = reconstruction_beta
        if reconstruction_scales < 1 or image_size >> (reconstruction_scales - 1) < 4:
            raise UserFacingError(f"model.reconstruction_scales must be at least 1 and leave the coarsest level at least 4 pixels "
                                  f"(image_size {image_size}: at most {max(1, image_size.bit_length() - 2)}), got {reconstruction_scales}")
        self.reconstruction_scales = reconstruction_scales
        if non_finite not in ("stop", "skip") or max_skipped_steps < 0:
            raise UserFacingError(f"model.non_finite must be 'stop' or 'skip' and max_skipped_steps ≥ 0, got {non_finite!r} and {max_skipped_steps}")
        self.non_finite, self.max_skipped_steps, self.skipped_steps = non_finite, max_skipped_steps, 0
        if losses.perceptual > 0 and perceptual_weights is None:
            raise UserFacingError(
                f"losses.perceptual={losses.perceptual} needs VGG-16 weights: set model.perceptual_weights to a local "
                "torchvision vgg16 state dict, or set losses.perceptual=0"
            )
        self.perceptual = PerceptualLoss(perceptual_weights) if losses.perceptual > 0 else None
        self._optimizer_factory = optimizer
        metrics = MetricCollection(
            {"l1": MeanAbsoluteError(), "psnr": PeakSignalNoiseRatio(data_range=1.0), "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)}
        )
        self.val_metrics = metrics.clone(prefix="val/")
        self.val_floor = MeanAbsoluteError()  # the no-motion answer (output = portrait) on the same pairs
        self.test_metrics = metrics.clone(prefix="test/")
        self.protocol_metrics = nn.ModuleDict()  # per test group, built when test starts
        # Convolution weights in channels-last layout: measured 15–40% faster inference on CPU (oneDNN), and the
        # layout tensor cores prefer; activations follow the weights' layout.
        self.to(memory_format=torch.channels_last)

    def describe(self, frames: Tensor) -> Motion:
        """Descriptor of ``frames`` ``B×3×H×W`` in ``[0, 1]``; no graph is kept for a frozen descriptor."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.descriptor.trainable):
            return self.descriptor(frames)

    @property
    def needs_parameters(self) -> bool:
        """Training needs the data's true rig parameters (for the descriptor or the parameter reader)."""
        return self.descriptor.needs_parameters or self.parameter_reader is not None

    def registration_affines(self, frames: Tensor, references: Tensor, motion_type: MotionType = "affine") -> tuple[Tensor, Tensor]:
        """``frames`` ``B×3×H×W`` registered with ``references`` (the same shape, or one frame for all) in every window
        of ``registration``: affines ``B×W×2×3`` (:mod:`modules.registration`) and ``B×W`` bool, where ECC aligned
        (elsewhere the identity); the share aligned is kept for the training log."""
        results = [register_affine(references.expand_as(frames), frames, window, motion_type) for window in self.registration]
        aligned = torch.stack([ok for _, ok in results], 1)
        self.last_registration_rate = aligned.float().mean().item()
        return torch.stack([affine for affine, _ in results], 1), aligned

    def transferred_affines(self, affines: Tensor, aligned: Tensor, frames: Tensor, references: Tensor,
                            frames_read: Tensor | None = None, references_read: Tensor | None = None) -> Tensor:
        """The registration affines of a relative transfer: the driver's registered change (``affines`` ``B×W×2×3`` of
        ``frames`` with ``references``, ``aligned`` ``B×W``) as it is, or with ``parameter_reader`` blended with the
        affines the parameter map gives for the reader's reading of the same change (``parameter_share``; the map's
        alone where ECC failed; ``frames_read``, ``references_read``: the reader's vectors for ``frames`` and
        ``references`` where already computed, the latter ``B×P`` or ``1×P``). No gradient reaches the reader from
        here: it learns the parameters only."""
        if self.parameter_reader is None or self.parameter_map is None:
            return affines
        if not self.parameter_map.fitted and not self.training:
            rank_zero_warn(f"the parameter map has seen {int(self.parameter_map.count)} training pairs, fewer than "
                           f"{self.parameter_map.min_observations}: it answers 'no motion', so relative transfer moves by "
                           f"{1 - self.parameter_share:.2f} of the driver's registered change — train longer")
        with torch.no_grad():
            now = self.parameter_reader(frames).vector if frames_read is None else frames_read.detach()
            first = self.parameter_reader(references.expand_as(frames)).vector if references_read is None else references_read.detach()
            change = now - first
        share = torch.where(aligned, self.parameter_share, 1.0).to(affines.dtype)[..., None, None]
        return (1.0 - share) * affines + share * self.parameter_map(change).to(affines.dtype)

    def with_registration(self, motion: Motion, affines: Tensor | None) -> Motion:
        """``motion`` with one keypoint per registration window appended: the keypoint whose first-order motion is
        that window's affine (``affines`` ``B×W×2×3``), or with ``None`` the reference's own — the centre with the
        identity Jacobian."""
        size, windows = len(motion.vector), len(self.registration)
        if affines is None:
            keypoint, jacobian = reference_keypoint(size, motion.vector.device, motion.vector.dtype)
            keypoints, jacobians = keypoint.expand(size, windows, 2), jacobian.expand(size, windows, 2, 2)
        else:
            keypoint, jacobian = affine_keypoint(affines.flatten(0, 1))
            keypoints, jacobians = keypoint.view(size, windows, 2), jacobian.view(size, windows, 2, 2)
        return replace(motion, keypoints=torch.cat([motion.keypoints, keypoints], 1), jacobians=torch.cat([motion.jacobians, jacobians], 1))

    def registered(self, motion: Motion, frames: Tensor | None = None, references: Tensor | None = None,
                   transfer: bool = False, references_read: Tensor | None = None) -> Motion:
        """``motion`` with the registration keypoints appended (one per window of ``registration``) where the motion
        lacks them (unchanged otherwise): those of ``frames`` registered with ``references`` (``B×3×H×W``; a single
        reference serves every frame; ``transfer``: the driver's own first frame in relative transfer, registered with
        ``registration_transfer`` motions and blended with the parameter map's, :meth:`transferred_affines`, with
        ``references_read`` the reader's vector for ``references`` where already computed), or
        without frames the reference's own — the centre with the identity Jacobian, which is also what a motion from
        a vector (a human face, parameters) gets: nothing to register."""
        if not self.registration or motion.keypoints.shape[1] > self.descriptor.spec.num_keypoints:
            return motion
        if frames is None:
            return self.with_registration(motion, None)
        affines, aligned = self.registration_affines(frames, references, self.registration_transfer if transfer else "affine")
        if transfer:
            affines = self.transferred_affines(affines, aligned, frames, references, references_read=references_read)
        return self.with_registration(motion, affines)

    def observe_parameter_map(self, batch: dict[str, Tensor], affines: Tensor, aligned: Tensor, own: Tensor) -> None:
        """Add a training batch's pairs of one character (``own`` ``B`` bool) whose registration aligned in every
        window to the parameter map's fit: their true parameter change (driving − portrait, normalised; entries the
        character lacks or does not know: 0) against their registration ``affines`` ``B×W×2×3``."""
        if self.parameter_map is None or "source_params" not in batch or "driving_params" not in batch:
            return
        source, driving = batch["source_params"].to(affines.dtype), batch["driving_params"].to(affines.dtype)
        known = source.isfinite() & driving.isfinite()
        if "driving_param_mask" in batch:
            known &= batch["driving_param_mask"].bool()
        change = torch.where(known, normalise_rig_parameters(driving) - normalise_rig_parameters(source), torch.zeros_like(source))
        use = own & aligned.all(1)
        self.parameter_map.observe(change[use], affines[use])  # every step, even empty: under DDP every process must reduce

    def forward(self, source: Tensor, driving: Tensor) -> Tensor:
        """Animate ``source`` to the pose of ``driving`` (both ``B×3×H×W`` in ``[0, 1]``); unclamped."""
        motion = self.describe(torch.cat([source, driving]))
        batch = source.shape[0]
        return self.backbone(source, self.registered(motion[:batch]), self.registered(motion[batch:], driving, source))

    def compute_losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor]:
        """Loss terms and the animated prediction for a batch of pairs.

        A batch with ``driving_first`` (cross-identity training pairs, ``Live2DClipDataModule(cross_fraction)``: the
        driver at the portrait's frame; the portrait itself for self pairs) animates its cross-identity pairs the
        way :meth:`animate` transfers motion relatively — the driver's change since ``driving_first`` applied to the
        portrait's motion — so the model learns how another character's change looks on this one: the prediction is
        scored against ``target`` (the portrait's character in the driver's pose), and the region losses use
        ``target_regions`` (both default to the driving frame's). Under ``teacher_forcing`` the parameters are
        transferred as they are.

        Returns:
            The terms by name — those of :class:`~modules.losses.LossWeights` unweighted, the descriptor's and the
            backbone's own (``descriptor/…``, e.g. equivariance; ``backbone/…``, e.g. mask losses) and the parameter
            reader's (``reader/…``) already weighted — and the prediction ``B×3×H×W``. Training batches' own-character
            pairs also add to the parameter map's fit (:meth:`observe_parameter_map`).
        """
        weights = self.losses
        source, driving = batch["source"], batch["driving"]
        # what the output should be: the driving frame in self pairs, the portrait's character in the driver's pose in
        # cross-identity pairs (never the driver's own frame); with its region map where the data has one
        target = batch.get("target", driving)
        output_regions = batch.get("target_regions", batch.get("driving_regions"))
        first = batch.get("driving_first")  # with cross-identity training pairs: the driver at the portrait's frame
        size = source.shape[0]
        teacher = self.teacher_forcing and "source_params" in batch and "driving_params" in batch
        relative = first is not None and not teacher  # parameters transfer as they are (identity-free)
        # the pairs another character drives (self pairs carry the portrait, up to augmentation's rounding)
        cross = (first - source).abs().flatten(1).amax(1) > 1e-3 if relative else torch.zeros(size, dtype=torch.bool, device=source.device)
        motion = self.describe(torch.cat([source, driving, first[cross]]) if cross.any() else torch.cat([source, driving]))
        m_src, m_drv = motion[:size], motion[size : 2 * size]
        read_drv = m_drv  # what the descriptor saw, for its own losses
        if teacher:
            known = batch.get("driving_param_mask")  # the pair's character: the same for both frames
            m_src = self.descriptor.with_parameters(m_src, batch["source_params"], known)
            m_drv = self.descriptor.with_parameters(m_drv, batch["driving_params"], known)
        m_src = self.registered(m_src)
        # the reader learns the parameters from the driving frames as loaded: an augmentation's rotation, recolouring
        # and mirroring falsify what a frame shows of them (held-out head-angle change error 0.15 against 0.22–0.24, a
        # reader trained alone for 700 steps on clean or augmented frames; README, Quality); without augmentation
        # its reading is reused by the cross pairs' transfer
        loaded = batch.get("unaugmented", batch)
        reading = self.parameter_reader(loaded["driving"]) if self.parameter_reader is not None and torch.is_grad_enabled() else None
        if self.registration:
            affines, aligned = self.registration_affines(driving, first if relative else source)
            if self.training and torch.is_grad_enabled():
                self.observe_parameter_map(batch, affines, aligned, ~cross)
            if cross.any():
                affines = affines.clone()
                affines[cross] = self.transferred_affines(affines[cross], aligned[cross], driving[cross], first[cross],
                                                          None if reading is None or loaded is not batch else reading.vector[cross])
            m_drv = self.with_registration(m_drv, affines)
        if cross.any():  # as animate's relative transfer
            m_drv = m_drv.replaced(cross, m_src[cross].relative(m_drv[cross], self.registered(motion[2 * size :])))
        if weights.identity > 0:
            generated = self.backbone.generate(torch.cat([source, source]), Motion.cat([m_src, m_src]), Motion.cat([m_drv, m_src]))
            prediction, identity = generated.prediction[:size], generated.prediction[size:]
            generated = generated[:size]
        else:
            generated = self.backbone.generate(source, m_src, m_drv)
            prediction, identity = generated.prediction, None
        beta, scales = self.reconstruction_beta, self.reconstruction_scales
        terms = {"reconstruction": pyramid_error(prediction, target, scales, beta)}
        if identity is not None:
            terms["identity"] = pyramid_error(identity, source, scales, beta)
        if weights.tv > 0:
            terms["tv"] = residual_tv_loss(prediction, source)
        if weights.motion > 0:
            if self.motion_loss == "descriptor_delta":
                terms["motion"] = descriptor_delta_loss(self.descriptor.describe_frozen(prediction), m_drv, m_src)
            else:
                terms["motion"] = rgb_residual_motion_loss(prediction, target, source, self.rgb_blur_sigma)
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(prediction, target)
        if weights.expression > 0 and "source_regions" in batch and output_regions is not None:
            expression = torch.maximum(region_mask(batch["source_regions"], EXPRESSION_REGIONS), region_mask(output_regions, EXPRESSION_REGIONS))
            terms["expression"] = region_error(prediction, target, expression, beta)
        if torch.is_grad_enabled():
            # the backbone's losses concern the frame it outputs: its regions are the target's
            as_output = batch if output_regions is None else {**batch, "driving_regions": output_regions}
            terms.update({f"backbone/{name}": value for name, value in self.backbone.auxiliary_losses(generated, as_output).items()})
            if self.descriptor.trainable:
                terms.update({f"descriptor/{name}": value for name, value in self.descriptor.auxiliary_losses(driving, read_drv, batch).items()})
            if reading is not None:
                terms.update({f"reader/{name}": value for name, value in self.parameter_reader.auxiliary_losses(loaded["driving"], reading, loaded).items()})
        return terms, prediction

    def total_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """The weighted sum of :meth:`compute_losses`' terms."""
        return sum(value if "/" in name else getattr(self.losses, name) * value for name, value in terms.items())  # type: ignore[return-value]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        terms, _ = self.compute_losses(batch)
        total = self.total_loss(terms)
        bad = non_finite_entries({**terms, "loss": total})
        if bad:
            bad = [name for name in bad if name != "loss"] or bad  # name the terms; the sum only when they are finite
            self._non_finite(f"loss terms {', '.join(bad)} are not finite")
            return None  # skipped: Lightning leaves out backward and the optimizer step
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=batch["source"].shape[0])
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch["source"].shape[0])
        if self.last_registration_rate is not None:
            self.log("train/registered", self.last_registration_rate, batch_size=batch["source"].shape[0])
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        bad = non_finite_entries({name: p.grad for name, p in self.named_parameters() if p.grad is not None})
        if bad:
            self._non_finite(f"gradients of {len(bad)} parameters are not finite (first: {bad[0]})")
            for parameter in self.parameters():
                parameter.grad = None  # the optimizer skips parameters without a gradient: no update this step

    def _non_finite(self, what: str) -> None:
        """Stop (``non_finite="stop"``, or too many skipped) or count a skipped step, saying which step and what."""
        if self.non_finite == "skip" and self.skipped_steps < self.max_skipped_steps:
            self.skipped_steps += 1
            rank_zero_warn(f"step {self.global_step}: {what}; step skipped ({self.skipped_steps} of at most {self.max_skipped_steps})")
            self.log("train/skipped_steps", float(self.skipped_steps))
            return
        hint = (f" after {self.skipped_steps} skipped steps" if self.non_finite == "skip" else "") + \
            " — lower the learning rate (model.optimizer.init_args.lr) or check the data; nothing was saved from this step"
        raise NonFiniteError(f"training stopped at step {self.global_step}: {what}{hint}")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses to write a checkpoint whose weights or monitored metrics (``val/l1``) are not finite; keeps the
        skip count."""
        bad = non_finite_entries(checkpoint["state_dict"])
        if bad:
            raise NonFiniteError(f"not saving a checkpoint at step {self.global_step}: {len(bad)} weights are not finite "
                                 f"(first: {bad[0]}) — training diverged; lower the learning rate")
        monitored = {c.monitor for c in self._trainer.checkpoint_callbacks if c.monitor} if self._trainer is not None else set()
        metrics = non_finite_entries({k: v for k, v in self._trainer.callback_metrics.items() if k in monitored}) if monitored else []
        if metrics:
            raise NonFiniteError(f"not saving a checkpoint at step {self.global_step}: {', '.join(metrics)} not finite")
        checkpoint["skipped_steps"] = self.skipped_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuses a checkpoint with non-finite weights (written before this guard existed, or by other code)."""
        bad = non_finite_entries(checkpoint.get("state_dict", {}))
        if bad:
            raise CheckpointError(f"the checkpoint's weights are not finite ({len(bad)} tensors, first: {bad[0]}): it was "
                                  "saved from a run that diverged; use an earlier checkpoint")
        self.skipped_steps = int(checkpoint.get("skipped_steps", 0))

    def prepare(self, portrait: Tensor) -> PreparedPortrait:
        """A portrait ``B×3×H×W`` in ``[0, 1]`` with the descriptor's reading of it, computed once for a stream of
        driving frames (:meth:`animate_frame`, :meth:`animate_motion`)."""
        return PreparedPortrait(portrait, self.registered(self.describe(portrait)))

    def prepare_reference(self, frame: Tensor) -> PreparedReference:
        """The driver's reference frame ``B×3×H×W`` in ``[0, 1]`` (its neutral pose, a clip's first frame) with the
        descriptor's and the parameter reader's readings of it, computed once for a stream of driving frames
        (:meth:`animate_frame`'s relative transfer)."""
        with torch.no_grad():
            parameters = self.parameter_reader(frame).vector if self.parameter_reader is not None else None
        return PreparedReference(frame, self.describe(frame), parameters)

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """The motion of a descriptor vector ``B×D`` from elsewhere (the adapter's output for a human face, rig
        parameters read geometrically); ``NotImplementedError`` for descriptors whose vector does not determine
        their motion (semantic maps, ViT features)."""
        return self.descriptor.motion_from_vector(vector)

    def animate_motion(self, portrait: PreparedPortrait, motion: Motion, reference: Motion | None = None,
                       scale_movement: bool | None = None) -> Tensor:
        """The portrait in the pose of ``motion``, clamped, ``B×3×H×W`` in ``[0, 1]``.

        Args:
            portrait: from :meth:`prepare`.
            motion: the driver's motion (``B`` items, or 1 for every portrait).
            reference: absolute transfer when ``None``; else relative: the driver's change since ``reference``
                (its neutral pose: a clip's first frame, a human's rest pose) applied to the portrait's motion.
            scale_movement: relative transfer scales the change to the portrait's keypoint spread (FOMM's
                ``adapt_movement_scale``); ``None`` takes the module's ``adapt_movement_scale``.
        """
        motion = self.registered(motion)
        if reference is not None:
            reference = self.registered(reference)
            scale_movement = self.adapt_movement_scale if scale_movement is None else scale_movement
            scale = movement_scale(portrait.motion, reference) if scale_movement else None
            motion = portrait.motion.relative(motion, reference, scale)
        return self.backbone(portrait.image, portrait.motion, motion).clamp(0.0, 1.0)

    def animate_frame(self, portrait: PreparedPortrait, driving: Tensor, reference: PreparedReference | Motion | None = None,
                      scale_movement: bool | None = None, reference_frame: Tensor | None = None) -> Tensor:
        """The portrait in the pose of the driving frame ``B×3×H×W`` (read by the descriptor); arguments as
        :meth:`animate_motion`, ``reference`` from :meth:`prepare_reference` (or a :class:`Motion` alone). With
        ``registration`` the frame is registered with the portrait (absolute) or with the reference's frame
        (relative: a :class:`PreparedReference`'s, or ``reference_frame``, the frame a ``Motion`` reference describes,
        then required)."""
        read = None
        if isinstance(reference, PreparedReference):
            reference, reference_frame, read = reference.motion, reference.image, reference.parameters
        motion = self.describe(driving)
        if self.registration:
            if reference is not None and reference_frame is None:
                raise ValueError("this animator registers each driving frame with its reference: relative transfer needs "
                                 "reference_frame, the frame that `reference` describes (or a reference from prepare_reference)")
            motion = self.registered(motion, driving, portrait.image if reference is None else reference_frame,
                                     transfer=reference is not None, references_read=read)
        return self.animate_motion(portrait, motion, reference, scale_movement)

    def animate(self, source: Tensor, driving: Tensor, driving_first: Tensor | None = None,
                scale_movement: bool | None = None) -> dict[str, Tensor]:
        """A batch of pairs (every frame described in one pass): clamped predictions ``B×3×H×W``, ``absolute``
        and, given the driver's first frame, ``relative`` (see :meth:`animate_motion`)."""
        frames = [source, driving] + ([driving_first] if driving_first is not None else [])
        motion = self.describe(torch.cat(frames))
        size = source.shape[0]
        portrait, driving_motion = PreparedPortrait(source, self.registered(motion[:size])), motion[size : 2 * size]
        predictions = {"absolute": self.animate_motion(portrait, self.registered(driving_motion, driving, source))}
        if driving_first is not None:
            predictions["relative"] = self.animate_motion(portrait, self.registered(driving_motion, driving, driving_first, transfer=True),
                                                          self.registered(motion[2 * size :]), scale_movement)
        return predictions

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        prediction = self(batch["source"], batch["driving"]).clamp(0.0, 1.0)
        target = batch.get("target", batch["driving"])
        self.val_metrics.update(prediction, target)
        self.val_floor.update(batch["source"], target)
        self.log_dict(self.val_metrics, prog_bar=True, batch_size=prediction.shape[0])
        return {"prediction": prediction}

    def on_validation_epoch_end(self) -> None:
        """Logs ``val/floor_l1`` (L1 of the no-motion answer, output = portrait) and ``val/under_floor``
        (``1 − val/l1 / val/floor_l1``: how much of the change the model gets right; 0 for a copy of the portrait,
        negative when it does worse than a copy)."""
        floor = self.val_floor.compute()
        under = 1.0 - self.val_metrics["l1"].compute() / floor.clamp_min(1e-8)
        self.log_dict({"val/floor_l1": floor, "val/under_floor": under}, prog_bar=False)
        self.val_floor.reset()

    def test_groups(self, loader_name: str) -> dict[str, str]:
        """Prediction kind → metric group of one test loader (``"self/held_out"`` → ``{"absolute":
        "self/held_out"}``; ``"cross/train"`` → absolute and relative groups; ``"pairs"`` → ``{"absolute": ""}``)."""
        if "/" not in loader_name:
            return {"absolute": ""}
        protocol, split = loader_name.split("/")
        if protocol == "self":
            return {"absolute": loader_name}
        return {kind: f"{protocol}_{kind}/{split}" for kind in ("absolute", "relative")}

    def on_test_start(self) -> None:
        names = getattr(self.trainer.datamodule, "test_names", ["pairs"])
        metrics = self.test_metrics.clone(prefix="")
        for name in names:
            for group in self.test_groups(name).values():
                if group:
                    self.protocol_metrics[group.replace("/", ":")] = metrics.clone(prefix=f"test/{group}/").to(self.device)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        names = getattr(self.trainer.datamodule, "test_names", ["pairs"])
        groups = self.test_groups(names[dataloader_idx])
        predictions = self.animate(batch["source"], batch["driving"], batch.get("driving_first") if len(groups) > 1 else None)
        for kind, group in groups.items():
            metrics = self.protocol_metrics[group.replace("/", ":")] if group else self.test_metrics
            metrics.update(predictions[kind], batch["target"])
            self.log_dict(metrics, batch_size=batch["source"].shape[0], add_dataloader_idx=False)
        return {"predictions": predictions, "groups": groups}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict:
        """The predictions of :meth:`animate` for a protocol batch and their groups (as ``test_step``), or for plain
        pairs the absolute prediction (group ``""``)."""
        names = getattr(self.trainer.datamodule, "predict_names", ["pairs"])
        groups = self.test_groups(names[dataloader_idx])
        predictions = self.animate(batch["source"], batch["driving"], batch.get("driving_first") if len(groups) > 1 else None)
        return {"predictions": predictions, "groups": groups}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._optimizer_factory([p for p in self.parameters() if p.requires_grad])

