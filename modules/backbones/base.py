"""The animator-backbone interface: (portrait, its motion, driving motion) → animated portrait."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable

from torch import Tensor, nn

from modules.descriptors.base import Motion, MotionSpec


@dataclass
class Generated:
    """A backbone's prediction with the intermediate maps it was made from.

    Attributes:
        prediction: ``B×C×H×W``, not clamped (nominally ``[0, 1]``).
        maps: named ``B×c×H×W`` maps, at the image's resolution unless the backbone documents otherwise (masks in
            ``[0, 1]``, flows in normalised units) for the backbone's own losses and for pictures; empty for
            backbones that make none.
    """

    prediction: Tensor
    maps: dict[str, Tensor] = field(default_factory=dict)

    def __getitem__(self, index: slice) -> Generated:
        """The batch items selected by ``index``."""
        return Generated(self.prediction[index], {name: m[index] for name, m in self.maps.items()})


class AnimatorBackbone(nn.Module, ABC):
    """Base class for generators.

    Subclasses take ``(motion: MotionSpec, channels: int, ...)`` as their first two constructor arguments, so
    the :class:`~modules.animator_module.AnimatorModule` can build them for whichever descriptor it holds
    (see :data:`BackboneFactory`).
    """

    size_multiple: int = 1
    """Frame height and width must be multiples of this (checked when the model is built and at every forward)."""

    def check_size(self, height: int, width: int) -> None:
        """Raises ``ValueError`` naming the backbone when ``height×width`` is not a multiple of :attr:`size_multiple`."""
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"{type(self).__name__} needs frames whose sides are multiples of {self.size_multiple}, got {height}×{width}")

    @abstractmethod
    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        """Animate ``source`` (``B×C×H×W``, ``[0, 1]``) from its own motion to the driving motion.

        Returns:
            The prediction ``B×C×H×W`` (not clamped; nominally ``[0, 1]``).
        """

    def generate(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Generated:
        """:meth:`forward` with its intermediate maps (this default has none)."""
        return Generated(self(source, source_motion, driving_motion))

    def auxiliary_losses(self, generated: Generated, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The backbone's own training losses on a :meth:`generate` output for ``batch``'s pairs, already weighted
        (none by default). ``batch`` may hold ground truth such as ``source_regions``/``driving_regions``."""
        return {}


BackboneFactory = Callable[[MotionSpec, int], AnimatorBackbone]
"""A backbone class with its own settings bound, awaiting ``(motion_spec, channels)``.

In YAML: ``backbone: {class_path: modules.backbones.FiLMUNet, init_args: {width: 32}}``.
"""
