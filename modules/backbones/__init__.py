"""Animator backbones: (portrait, motion) → animated portrait."""

from modules.backbones.base import AnimatorBackbone, BackboneFactory, Generated
from modules.backbones.expression_pose import ExpressionPoseGenerator
from modules.backbones.film_unet import FiLMUNet
from modules.backbones.warping import WarpingGenerator

__all__ = ["AnimatorBackbone", "BackboneFactory", "ExpressionPoseGenerator", "FiLMUNet", "Generated", "WarpingGenerator"]
