"""``PuppetDataModule``: (portrait, driving frame) pairs of procedural puppets, rendered on the fly.

Every pair is a pure function of ``(seed, split, index)``, so validation and test are deterministic and
any worker renders the same sample. Training and held-out identities are disjoint.

Batches: :class:`core.batch.PairBatch`, every key present (a puppet has every parameter, region and keypoint).
"""

from __future__ import annotations

from functools import lru_cache
import numpy as np
import torch
from torch.utils.data import Dataset

from core.batch import PairMode
from core.vocabulary import default_parameters
from datamodules.augmentation import PairAugmentation
from datamodules.live2d.trajectories import random_trajectory
from datamodules.pair_datamodule import PairDataModule
from datamodules.protocols import EvaluationClip, Split
from datamodules.puppet import PuppetIdentity, render_puppet, sample_parameters

HELD_OUT_OFFSET = 1_000_000  # identity seeds of held-out characters start here
EVALUATION_TRAJECTORIES = 2  # evaluation clip of identity i follows trajectory i mod 2 (shared: cross-identity truth)


@lru_cache(maxsize=4096)
def _identity(seed: int) -> PuppetIdentity:
    return PuppetIdentity.from_seed(seed)


def _image(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def held_out_list(count: int) -> list[int]:
    """Identity seeds of the held-out characters."""
    return list(range(HELD_OUT_OFFSET, HELD_OUT_OFFSET + count))


@lru_cache(maxsize=16)
def _trajectory(replay: int, frames: int) -> np.ndarray:
    return random_trajectory(0x9E7 + replay, frames)


class PuppetFrames:
    """Frames of puppet evaluation clips: identity ``clip.key`` along trajectory ``clip.replay``."""

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size

    def __call__(self, clip: EvaluationClip, t: int) -> dict[str, torch.Tensor]:
        params = _trajectory(clip.replay, clip.length)[t]  # type: ignore[arg-type]
        frame = render_puppet(_identity(clip.key), params, self.image_size)  # type: ignore[arg-type]
        return {"image": _image(frame.image), "params": torch.from_numpy(params.copy()), "keypoints": torch.from_numpy(frame.keypoints),
                "regions": torch.from_numpy(frame.regions).long()}


class PuppetPairs(Dataset):
    """Pairs of puppet frames.

    Args:
        identities: identity seeds to draw characters from.
        length: number of pairs.
        image_size: square frame size in pixels.
        seed: fixes every pair; the same ``(seed, index)`` always renders the same pair.
        mode: ``"self"`` — source and driving are the same character in two random poses; ``"cross"`` —
            source is character A's neutral frame, driving is character B in pose p, target is A in pose p.
    """

    def __init__(self, identities: list[int], length: int, image_size: int, seed: int, mode: PairMode = "self") -> None:
        if mode == "cross" and len(identities) < 2:
            raise ValueError(f"cross-identity pairs need at least 2 identities, got {len(identities)}")
        if length < 1:
            raise ValueError(f"length must be positive, got {length}")
        self.identities, self.length, self.image_size, self.seed, self.mode = identities, length, image_size, seed, mode

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        picks = rng.choice(len(self.identities), size=2, replace=False) if self.mode == "cross" else [rng.integers(len(self.identities))] * 2
        source_id, driving_id = (self.identities[int(i)] for i in picks)
        driving_params = sample_parameters(rng)
        source_params = default_parameters() if self.mode == "cross" else sample_parameters(rng)
        source = render_puppet(_identity(source_id), source_params, self.image_size)
        driving = render_puppet(_identity(driving_id), driving_params, self.image_size)
        driving_image = _image(driving.image)
        if self.mode == "self":
            target_image = driving_image
        else:
            target_image = _image(render_puppet(_identity(source_id), driving_params, self.image_size).image)
        return {
            "source": _image(source.image),
            "driving": driving_image,
            "target": target_image,
            "source_params": torch.from_numpy(source_params),
            "driving_params": torch.from_numpy(driving_params),
            "driving_param_mask": torch.ones(len(driving_params), dtype=torch.bool),
            "identity": torch.tensor(source_id, dtype=torch.int64),
            "driving_identity": torch.tensor(driving_id, dtype=torch.int64),
            "source_regions": torch.from_numpy(source.regions).long(),
            "driving_regions": torch.from_numpy(driving.regions).long(),
            "source_keypoints": torch.from_numpy(source.keypoints),
            "driving_keypoints": torch.from_numpy(driving.keypoints),
        }


class PuppetDataModule(PairDataModule):
    """Procedural anime-face puppets: the embedded default data, no downloads.

    Args:
        image_size: square frame size in pixels (linked to the model's ``image_size`` by the CLI).
        batch_size: pairs per batch.
        num_workers: DataLoader worker processes (0 renders in the training process).
        train_identities: number of training characters.
        held_out_identities: number of held-out characters used for validation and test.
        train_pairs: pairs per training epoch.
        val_pairs: validation pairs (deterministic).
        test_pairs: test pairs (deterministic).
        val_mode: pair mode for validation (``"self"`` or ``"cross"``).
        test_mode: pair mode of the ``test_pairs`` (test without ``test_protocols``).
        seed: fixes characters and pairs.
        augmentation: random augmentation of training pairs (e.g. ``datamodules.augmentation.PairAugmentation``).
        test_protocols: evaluation protocols for test (``self``, ``cross``; see :mod:`datamodules.protocols`);
            unset, test uses ``test_pairs`` pairs of ``test_mode``. Each evaluation character is one clip.
        test_clips: characters (clips) per split and protocol.
        test_clip_frames: frames per evaluation clip.
    """

    def __init__(
        self,
        image_size: int = 128,
        batch_size: int = 8,
        num_workers: int = 2,
        train_identities: int = 512,
        held_out_identities: int = 32,
        train_pairs: int = 20000,
        val_pairs: int = 64,
        test_pairs: int = 256,
        val_mode: PairMode = "self",
        test_mode: PairMode = "cross",
        seed: int = 0,
        augmentation: PairAugmentation | None = None,
        test_protocols: list[PairMode] | None = None,
        test_clips: int = 4,
        test_clip_frames: int = 30,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augmentation"])
        self.keep_settings(image_size, batch_size, num_workers, augmentation, test_protocols, test_clips, test_clip_frames)
        train = list(range(train_identities))
        held_out = held_out_list(held_out_identities)
        self._evaluation_identities = {"train": train[:test_clips], "held_out": held_out[:test_clips]}
        self.train_set = PuppetPairs(train, train_pairs, image_size, seed, "self")
        self.val_set = PuppetPairs(held_out, val_pairs, image_size, seed + 1, val_mode)
        self.test_set = PuppetPairs(held_out, test_pairs, image_size, seed + 2, test_mode)

    def evaluation_clips(self, split: Split) -> list[EvaluationClip]:
        return [EvaluationClip(str(i), i, self.test_clip_frames, n % EVALUATION_TRAJECTORIES, i) for n, i in enumerate(self._evaluation_identities[split])]

    def evaluation_reader(self) -> PuppetFrames:
        return PuppetFrames(self.image_size)
