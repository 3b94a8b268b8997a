"""Animator backbones: (portrait, motion) → animated portrait."""

from modules.backbones.base import AnimatorBackbone, BackboneFactory
from modules.backbones.film_unet import FiLMUNet

__all__ = ["AnimatorBackbone", "BackboneFactory", "FiLMUNet"]
