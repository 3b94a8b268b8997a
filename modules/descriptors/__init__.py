"""Motion descriptors: frames → :class:`Motion` (a flat vector and, where spatial, motion maps)."""

from modules.descriptors.base import Motion, MotionDescriptor, MotionSpec
from modules.descriptors.keypoints import KeypointDescriptor
from modules.descriptors.rig import RigDescriptor
from modules.descriptors.semantic import SemanticDescriptor
from modules.descriptors.vit import ViTDescriptor

__all__ = ["KeypointDescriptor", "Motion", "MotionDescriptor", "MotionSpec", "RigDescriptor", "SemanticDescriptor", "ViTDescriptor"]
