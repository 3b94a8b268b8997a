"""Models: the AnimatorModule and its parts (descriptors, backbones, losses)."""

from modules.animator_module import AnimatorModule
from modules.losses import LossWeights

__all__ = ["AnimatorModule", "LossWeights"]
