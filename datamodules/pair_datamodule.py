"""``PairDataModule``: the loaders shared by every (portrait, driving frame) DataModule."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from torchdata.stateful_dataloader.sampler import RandomSampler

from core.batch import PairMode
from datamodules.augmentation import PairAugmentation
from datamodules.protocols import EvaluationClip, FrameReader, ProtocolPairs, Split

def _order_of(sampler: Any) -> str:
    """What draws a loader's order: the sampler's class and, distributed, the number of processes."""
    replicas = getattr(sampler, "num_replicas", None)
    return type(sampler).__name__ + (f" over {replicas} processes" if replicas else "")


class ResumableLoader(StatefulDataLoader):
    """The training loader: its position and shuffling state go into checkpoints, and are restored where the order
    is drawn the same way. A checkpoint from another layout (e.g. one process, resumed on two with DDP's
    distributed sampler) starts a new order, with a warning: such a resume is not exact."""

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "order": _order_of(self.sampler)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        saved, now = state.pop("order", None), _order_of(self.sampler)
        if saved != now:
            rank_zero_warn(f"the checkpoint's training pairs were ordered by {saved}, this run's by {now}: they start a new "
                           "order (the resumed run is not exact)")
            return
        super().load_state_dict(state)


class PairDataModule(L.LightningDataModule):
    """Base class: subclasses call :meth:`keep_settings`, set ``train_set``, ``val_set`` and ``test_set``, and
    implement :meth:`evaluation_clips` and :meth:`evaluation_reader`. Batches: :class:`core.batch.PairBatch`.

    Training shuffles, drops the last partial batch and applies ``augmentation`` (if any) to each batch on its
    device, keeping the batch as loaded under ``"unaugmented"`` (for losses whose ground truth an augmentation
    would falsify: a rotated or recoloured frame no longer shows its rig parameters); its loader is a
    :class:`ResumableLoader`, whose position and shuffling state go into checkpoints (a run resumed mid-epoch
    continues the same order). Validation, test and predict keep the datasets' fixed order,
    unaugmented.

    Predict: the clips of :attr:`predict_names`, as test's protocols (:meth:`protocol_loader`).

    Test: without ``test_protocols`` one loader of ``test_set`` pairs; with them one loader per protocol and
    split (:mod:`datamodules.protocols`), named in :attr:`test_names` (``"self/held_out"``, …), over
    ``test_clips`` clips per split of at most ``test_clip_frames`` frames.
    """

    train_set: Dataset
    val_set: Dataset
    test_set: Dataset
    batch_size: int
    num_workers: int
    augmentation: PairAugmentation | None = None
    test_protocols: list[PairMode] | None = None
    test_clips: int = 4
    test_clip_frames: int = 30

    def keep_settings(self, image_size: int, batch_size: int, num_workers: int, augmentation: PairAugmentation | None,
                      test_protocols: list[PairMode] | None, test_clips: int, test_clip_frames: int) -> None:
        """Check and keep the settings every subclass takes (``ValueError`` naming the bad one); the subclass's own
        ``__init__`` calls ``save_hyperparameters(ignore=["augmentation"])`` (it reads its caller's arguments)."""
        if image_size < 16:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be at least 0, got {num_workers}")
        if test_clips < 1 or test_clip_frames < 1:
            raise ValueError(f"test_clips and test_clip_frames must be at least 1, got {test_clips} and {test_clip_frames}")
        self.image_size, self.batch_size, self.num_workers = image_size, batch_size, num_workers
        self.augmentation = augmentation
        self.test_protocols, self.test_clips, self.test_clip_frames = test_protocols, test_clips, test_clip_frames

    def require_parameters(self) -> None:
        """Stop with a message naming the clips when training pairs carry no known standard parameters (for
        descriptors that learn from them); every subclass here but imported footage has them."""

    def evaluation_clips(self, split: Split) -> list[EvaluationClip]:
        """Every clip of the split's characters that the protocols may use."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation clips; leave test_protocols unset")

    def evaluation_reader(self) -> FrameReader:
        """A picklable ``(clip, t)`` → frame reader for :meth:`evaluation_clips`."""
        raise NotImplementedError(f"{type(self).__name__} has no evaluation clips; leave test_protocols unset")

    @property
    def test_names(self) -> list[str]:
        """Names of the test loaders, in order."""
        if not self.test_protocols:
            return ["pairs"]
        return [f"{protocol}/{split}" for protocol in self.test_protocols for split in ("train", "held_out")]

    def on_after_batch_transfer(self, batch: dict[str, Tensor], dataloader_idx: int) -> dict[str, Tensor]:
        trainer = self.trainer
        if self.augmentation is not None and trainer is not None and trainer.training:
            return {**self.augmentation.to(batch["source"].device)(batch), "unaugmented": batch}
        return batch

    @property
    def channels(self) -> int:
        """Image channels (RGB); linked into the model by the CLI."""
        return 3

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        # Every loader draws its workers' seeds from a generator of its own: a resumed run starts its iterators at
        # other steps than an uninterrupted one, and must not shift the global generators the training steps use.
        if not shuffle:
            return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                              generator=torch.Generator().manual_seed(0))
        # The training order has one too (seeded from the global one), saved with the loader's position.
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()))))
        return ResumableLoader(dataset, batch_size=self.batch_size, sampler=sampler, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0, drop_last=True,
                               generator=torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()))))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    @property
    def predict_names(self) -> list[str]:
        """Names of the predict loaders: self-reenactment on held-out characters and, where their clips replay a
        shared trajectory, cross-identity."""
        replayed = any(c.replay is not None for c in self.evaluation_clips("held_out"))
        return ["self/held_out"] + (["cross/held_out"] if replayed else [])

    def protocol_loader(self, name: str, clips: int | None = None) -> DataLoader:
        """The loader of one protocol on one split (``"self/held_out"``, …) over ``clips`` clips (default
        ``test_clips``), one character in turn, of at most ``test_clip_frames`` frames."""
        protocol, split = name.split("/")
        usable = [c for c in self.evaluation_clips(split) if protocol == "self" or c.replay is not None]  # type: ignore[arg-type]
        by_character: dict[str, list[EvaluationClip]] = {}
        for clip in usable:
            by_character.setdefault(clip.character, []).append(clip)
        spread = [c for row in zip_longest(*by_character.values()) for c in row if c is not None]  # one per character in turn
        drivers = self.evaluation_clips("train") + self.evaluation_clips("held_out")
        pairs = ProtocolPairs(spread[: clips or self.test_clips], drivers, self.evaluation_reader(), protocol, self.test_clip_frames)  # type: ignore[arg-type]
        return self._loader(pairs, shuffle=False)

    def test_dataloader(self) -> DataLoader | list[DataLoader]:
        if not self.test_protocols:
            return self._loader(self.test_set, shuffle=False)
        return [self.protocol_loader(name) for name in self.test_names]

    def predict_dataloader(self) -> list[DataLoader]:
        """The evaluation clips of :attr:`predict_names` (``cli.py predict`` animates them into videos)."""
        return [self.protocol_loader(name) for name in self.predict_names]
