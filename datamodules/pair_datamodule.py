"""``PairDataModule``: the loaders shared by every (portrait, driving frame) DataModule."""

from __future__ import annotations

from typing import Literal

import lightning as L
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.augmentation import PairAugmentation

PairMode = Literal["self", "cross"]
"""``self``: source and driving frame of one character; ``cross``: two characters, with a ground-truth target."""


class PairDataModule(L.LightningDataModule):
    """Base class: subclasses set ``train_set``, ``val_set``, ``test_set``, ``batch_size``, ``num_workers`` and
    ``augmentation``.

    Training shuffles, drops the last partial batch and applies ``augmentation`` (if any) to each batch on its
    device; validation, test and predict keep the datasets' fixed order, unaugmented.
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset
    batch_size: int
    num_workers: int
    augmentation: PairAugmentation | None = None

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        trainer = self.trainer
        if self.augmentation is not None and trainer is not None and trainer.training:
            return self.augmentation.to(batch["source"].device)(batch)
        return batch

    @property
    def channels(self) -> int:
        """Image channels (RGB); linked into the model by the CLI."""
        return 3

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)
