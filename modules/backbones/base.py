"""The animator-backbone interface: (portrait, its motion, driving motion) → animated portrait."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from torch import Tensor, nn

from modules.descriptors.base import Motion, MotionSpec


class AnimatorBackbone(nn.Module, ABC):
    """Base class for generators.

    Subclasses take ``(motion: MotionSpec, channels: int, ...)`` as their first two constructor arguments, so
    the :class:`~modules.animator_module.AnimatorModule` can build them for whichever descriptor it holds
    (see :data:`BackboneFactory`).
    """

    @abstractmethod
    def forward(self, source: Tensor, source_motion: Motion, driving_motion: Motion) -> Tensor:
        """Animate ``source`` (``B×C×H×W``, ``[0, 1]``) from its own motion to the driving motion.

        Returns:
            The prediction ``B×C×H×W`` (not clamped; nominally ``[0, 1]``).
        """


BackboneFactory = Callable[[MotionSpec, int], AnimatorBackbone]
"""A backbone class with its own settings bound, awaiting ``(motion_spec, channels)``.

In YAML: ``backbone: {class_path: modules.backbones.FiLMUNet, init_args: {width: 32}}``.
"""
