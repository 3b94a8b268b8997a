"""Data: the embedded procedural puppet and rendered Live2D clips, both as (portrait, driving frame) pairs."""

from datamodules.live2d_datamodule import Live2DClipDataModule, Live2DClipPairs
from datamodules.puppet_datamodule import PuppetDataModule, PuppetPairs

__all__ = ["Live2DClipDataModule", "Live2DClipPairs", "PuppetDataModule", "PuppetPairs"]
