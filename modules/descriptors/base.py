"""The motion-descriptor interface every descriptor implements.

A descriptor reads frames ``B×3×H×W`` in ``[0, 1]`` and describes their motion state as a :class:`Motion`:
a flat ``B×D`` vector (used by the motion loss and for analysis) and, where the descriptor is spatial,
``B×M×h×w`` maps that an animator backbone consumes. Keypoints, where a descriptor has them, are in
normalised coordinates ``[-1, 1]`` (x right, y down; -1 and 1 are the centres of the outermost pixels, as in
kornia's ``create_meshgrid`` and ``grid_sample(align_corners=True)``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, fields

import torch
from torch import Tensor, nn
from torch.func import functional_call


@dataclass(frozen=True)
class MotionSpec:
    """What a descriptor emits, so a backbone can be built for it.

    Attributes:
        vector_dim: ``D``, the length of the flat descriptor vector.
        map_channels: ``M``, channels of the spatial motion maps; 0 when the descriptor gives none.
        num_keypoints: ``K``, points the descriptor locates (keypoints, region centroids); 0 when none.
        jacobians: whether each keypoint comes with a local 2×2 Jacobian.
        keypoint_names: what each keypoint is, where they are named landmarks
            (:data:`~core.vocabulary.KEYPOINT_NAMES`); empty for unsupervised keypoints.
    """

    vector_dim: int
    map_channels: int
    num_keypoints: int = 0
    jacobians: bool = False
    keypoint_names: tuple[str, ...] = ()


@dataclass
class Motion:
    """A batch of motion descriptions.

    Attributes:
        vector: ``B×D`` flat descriptor.
        maps: ``B×M×h×w`` spatial motion maps, or ``None``.
        keypoints: ``B×K×2`` keypoints in ``[-1, 1]``, or ``None``.
        jacobians: ``B×K×2×2`` local affine Jacobians at the keypoints (d position / d normalised coordinates),
            or ``None``.
    """

    vector: Tensor
    maps: Tensor | None = None
    keypoints: Tensor | None = None
    jacobians: Tensor | None = None

    def __getitem__(self, index: slice | Tensor) -> Motion:
        """The descriptions of the batch items selected by ``index`` (a slice, or a ``B`` bool mask)."""
        return Motion(*(None if t is None else t[index] for t in astuple_shallow(self)))

    def replaced(self, index: Tensor, other: Motion) -> Motion:
        """A copy with the items selected by ``index`` (``B`` bool) replaced by ``other``'s (one per selected item;
        fields ``other`` lacks stay this motion's)."""
        def put(mine: Tensor | None, theirs: Tensor | None) -> Tensor | None:
            if mine is None or theirs is None:
                return mine
            mine = mine.clone()
            mine[index] = theirs.to(mine.dtype)
            return mine

        return Motion(*(put(m, o) for m, o in zip(astuple_shallow(self), astuple_shallow(other))))

    def relative(self, driving: Motion, driving_first: Motion, scale: Tensor | None = None) -> Motion:
        """Relative motion transfer: this (source) description moved by the driver's change since its first frame.

        Vectors, maps and keypoints get ``source + scale·(driving − driving_first)`` (``scale`` ``B``, 1 when
        ``None``; see :func:`movement_scale`); Jacobians ``J_driving · J_first⁻¹ · J_source``. Maps and keypoints
        the driver does not give (a motion built from parameters alone) stay the source's.
        """
        factor = None if scale is None else scale.to(self.vector.dtype)

        def shift(source: Tensor | None, now: Tensor | None, first: Tensor | None) -> Tensor | None:
            if source is None:
                return None
            if now is None or first is None:
                return source
            change = now - first
            return source + (change if factor is None else factor.view(-1, *[1] * (change.dim() - 1)) * change)

        jacobians = self.jacobians
        if self.jacobians is not None and driving.jacobians is not None and driving_first.jacobians is not None:
            jacobians = driving.jacobians @ torch.linalg.inv(driving_first.jacobians) @ self.jacobians
        return Motion(
            vector=shift(self.vector, driving.vector, driving_first.vector),  # type: ignore[arg-type]
            maps=shift(self.maps, driving.maps, driving_first.maps),
            keypoints=shift(self.keypoints, driving.keypoints, driving_first.keypoints),
            jacobians=jacobians,
        )

    @staticmethod
    def cat(motions: list[Motion]) -> Motion:
        """Concatenate along the batch dimension."""
        columns = zip(*(astuple_shallow(m) for m in motions))
        return Motion(*(None if parts[0] is None else torch.cat(parts, dim=0) for parts in columns))


def movement_scale(source: Motion, driving_first: Motion) -> Tensor | None:
    """How much larger the portrait's face is than the driver's, from their keypoints: ``B`` factors
    ``sqrt(area(source) / area(driving_first))`` where area is the square root of the determinant of the keypoints'
    2×2 covariance (an ellipse-area measure of their spread; FOMM uses the convex hull). ``None`` when either
    motion has no keypoints."""
    if source.keypoints is None or driving_first.keypoints is None:
        return None

    def area(points: Tensor) -> Tensor:
        centred = points - points.mean(dim=1, keepdim=True)
        covariance = centred.transpose(1, 2) @ centred / points.shape[1]
        return torch.linalg.det(covariance).clamp_min(1e-12).sqrt()

    return (area(source.keypoints) / area(driving_first.keypoints)).sqrt()


def astuple_shallow(motion: Motion) -> tuple[Tensor | None, ...]:
    """The fields of ``motion`` in declaration order (without copying tensors, unlike ``dataclasses.astuple``)."""
    return tuple(getattr(motion, f.name) for f in fields(motion))


class MotionDescriptor(nn.Module, ABC):
    """Base class: frames ``B×3×H×W`` in ``[0, 1]`` → :class:`Motion`.

    Attributes:
        needs_parameters: training needs ground-truth standard parameters (``driving_params``) in the data.
        vector_is_parameters: the vector is the standard rig parameters (normalised to ``[-1, 1]``), so any reading
            of them (a human face's geometry, a replay) drives the animator through :meth:`motion_from_vector`.
    """

    needs_parameters: bool = False
    vector_is_parameters: bool = False

    @property
    @abstractmethod
    def spec(self) -> MotionSpec:
        """Sizes of what :meth:`forward` returns."""

    @property
    def trainable(self) -> bool:
        """Whether any parameter of this descriptor is trained with the animator."""
        return any(p.requires_grad for p in self.parameters())

    @abstractmethod
    def forward(self, frames: Tensor) -> Motion:
        """Describe ``frames`` (``B×3×H×W``, ``[0, 1]``)."""

    def auxiliary_losses(self, frames: Tensor, motion: Motion, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The descriptor's own training losses, already weighted by its settings (none by default).

        Args:
            frames: the driving frames ``B×3×H×W`` in ``[0, 1]``.
            motion: this descriptor's description of ``frames`` (with its graph).
            batch: the whole training batch (ground truth such as ``driving_regions`` where the data has it).
        """
        return {}

    def motion_from_vector(self, vector: Tensor) -> Motion:
        """The full description behind a flat vector ``B×D`` (what an adapter predicts).

        Raises:
            NotImplementedError: the vector does not determine this descriptor's maps.
        """
        raise NotImplementedError(
            f"{type(self).__name__}'s vector does not determine its motion maps, so an adapter cannot drive it; "
            "use an animator with a KeypointDescriptor"
        )

    def describe_frozen(self, frames: Tensor) -> Motion:
        """Describe ``frames`` with this descriptor's parameters held fixed.

        Gradients flow to ``frames`` only, so a loss on the result (the motion loss on a prediction) trains
        the animator without pulling the descriptor toward a trivial answer.
        """
        detached = {name: t.detach() for name, t in self.named_parameters()}
        detached.update(dict(self.named_buffers()))
        return functional_call(self, detached, (frames,))
