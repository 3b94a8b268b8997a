"""Data: the embedded procedural puppet and its DataModule (Live2D clips plug in beside it)."""

from datamodules.puppet_datamodule import PuppetDataModule, PuppetPairs

__all__ = ["PuppetDataModule", "PuppetPairs"]
