"""Data: the embedded procedural puppet and rendered Live2D clips as (portrait, driving frame) pairs; face-feature pairs for the adapter."""

from datamodules.adapter_datamodule import AdapterPairDataModule
from datamodules.live2d_datamodule import Live2DClipDataModule, Live2DClipPairs
from datamodules.puppet_datamodule import PuppetDataModule, PuppetPairs

__all__ = ["AdapterPairDataModule", "Live2DClipDataModule", "Live2DClipPairs", "PuppetDataModule", "PuppetPairs"]
