"""``Live2DClipDataModule``: (portrait, driving frame) pairs from rendered Live2D clips.

Clips come from ``python -m lightning_app.render`` (format: :mod:`datamodules.live2d.clips`). Characters are
split, not frames: ``held_out`` characters are used only for validation and test. Batches:
:class:`core.batch.PairBatch`, images composited over ``background``; ``source_regions``/``driving_regions`` and
``source_keypoints``/``driving_keypoints`` only where every clip has rendered ground truth; imported footage has no
known parameter (``driving_param_mask`` false).

Pairs:
    ``self`` — source and driving from one clip, at most ``max_gap`` frames apart; target = driving.
    ``cross`` — from two characters' renders of the same replayed trajectory: source = character A's first
    (neutral) frame, driving = character B at frame t, target = A at frame t. A is a character of the split
    (held-out characters for validation and test); the driver B may be any other character.

Training pairs are ``self`` pairs, and with ``cross_fraction > 0`` also cross pairs among the training characters
only (A's portrait taken at any frame of the replay, so it need not be neutral): the one pair that shows the model
another character's motion on this character's body, which no self pair can.
"""

from __future__ import annotations

import warnings
from typing import Literal

import cv2
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from core.batch import PairMode
from core.errors import UserFacingError
from core.frames import composite
from core.vocabulary import PARAMETER_NAMES
from datamodules.augmentation import PairAugmentation
from datamodules.live2d.clips import ClipInfo, GROUND_TRUTH, index_clips, open_arrays
from datamodules.pair_datamodule import PairDataModule
from datamodules.protocols import EvaluationClip, Split
from datamodules.puppet_datamodule import PuppetPairs



class ClipFrames:
    """Reads frames of rendered clips (memory maps opened lazily, so each DataLoader worker opens its own).

    Args:
        clips: the dataset's clips.
        image_size: output size (frames are resized with area interpolation, region maps with nearest).
        background: RGB colour behind the character.
    """

    def __init__(self, clips: list[ClipInfo], image_size: int, background: tuple[int, int, int]) -> None:
        self.clips, self.image_size = clips, image_size
        self.background = np.asarray(background, np.float32)
        self.ground_truth = all(set(GROUND_TRUTH) <= set(c.ground_truth) for c in clips)
        self._arrays: dict[int, dict[str, np.ndarray]] = {}
        self._known = [torch.tensor([name not in c.missing for name in PARAMETER_NAMES]) for c in clips]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_arrays": {}}  # memory maps are reopened where the reader is used

    def frame(self, clip: int, t: int) -> dict[str, torch.Tensor]:
        """Frame ``t`` of clip ``clip``: ``image``, ``params``, ``param_mask`` (which parameters the character has
        and are known) and, with ground truth, ``regions`` and ``keypoints``."""
        if clip not in self._arrays:
            self._arrays[clip] = open_arrays(self.clips[clip])
        arrays = self._arrays[clip]
        rgb = composite(np.asarray(arrays["frames"][t]), self.background, rounded=False)
        size = rgb.shape[0]
        if size != self.image_size:
            rgb = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=cv2.INTER_AREA)
        params = torch.from_numpy(np.array(arrays["params"][t], dtype=np.float32))
        frame = {
            "image": torch.from_numpy(np.clip(rgb, 0, 255) / 255.0).permute(2, 0, 1).float(),
            "params": params,
            "param_mask": self._known[clip] & params.isfinite(),
        }
        if self.ground_truth:
            regions = np.array(arrays["regions"][t])
            if size != self.image_size:
                regions = cv2.resize(regions, (self.image_size, self.image_size), interpolation=cv2.INTER_NEAREST)
            frame["regions"] = torch.from_numpy(regions).long()
            frame["keypoints"] = torch.from_numpy(np.array(arrays["keypoints"][t], dtype=np.float32) * (self.image_size / size))
        return frame

    def __call__(self, clip: EvaluationClip, t: int) -> dict[str, torch.Tensor]:
        """The :data:`~datamodules.protocols.FrameReader` form: ``clip.key`` is the clip's index."""
        return self.frame(clip.key, t)  # type: ignore[arg-type]


class Live2DClipPairs(Dataset):
    """Pairs drawn from ``clips``; ``(seed, index)`` fixes every pair.

    Args:
        clips: all clips of the dataset.
        portraits: the characters whose frames are sources (and targets) in this split.
        length: number of pairs.
        image_size: output size (frames are resized with area interpolation when it differs).
        mode: ``"self"`` or ``"cross"`` (see the module docstring).
        max_gap: largest frame distance within a self pair.
        background: RGB colour behind the character.
        seed: fixes the pairs.
        drivers: cross mode: the characters that may drive (unset: any character but the portrait's).
        any_portrait_frame: cross mode: the portrait is A at a random frame of the replay, not its first.
        with_reference: items carry ``driving_first``, the driver at the portrait's frame (B at A's frame in
            cross mode; the portrait itself in self mode), for relative transfer in training.
    """

    def __init__(self, clips: list[ClipInfo], portraits: list[str], length: int, image_size: int, mode: PairMode,
                 max_gap: int, background: tuple[int, int, int], seed: int, drivers: list[str] | None = None,
                 any_portrait_frame: bool = False, with_reference: bool = False) -> None:
        self.clips, self.length, self.image_size, self.mode = clips, length, image_size, mode
        self.max_gap, self.seed, self.any_portrait_frame, self.with_reference = max_gap, seed, any_portrait_frame, with_reference
        self.frames = ClipFrames(clips, image_size, background)
        self.ground_truth = self.frames.ground_truth
        self.identity = {name: i for i, name in enumerate(sorted({c.character for c in clips}))}
        self.own = [i for i, c in enumerate(clips) if c.character in portraits]
        if not self.own:
            raise UserFacingError(f"no clips of {', '.join(portraits)}")
        self.replays: list[tuple[int, list[int]]] = []  # (portrait clip, clips of other characters on its trajectory)
        if mode == "cross":
            for a in self.own:
                if clips[a].source == "replay":
                    others = [b for b, c in enumerate(clips) if c.seed == clips[a].seed and c.source == "replay" and c.character != clips[a].character
                              and (drivers is None or c.character in drivers)]
                    if others:
                        self.replays.append((a, others))
            if not self.replays:
                among = "" if drivers is None else f" (among {', '.join(drivers)})"
                raise UserFacingError(f"cross-identity pairs need a replayed trajectory of {', '.join(portraits)} rendered on another character{among} too")

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        if self.mode == "self":
            a = b = self.own[int(rng.integers(len(self.own)))]
            count = self.clips[a].frames
            t_src = int(rng.integers(count))
            t_drv = int(np.clip(t_src + rng.integers(-self.max_gap, self.max_gap + 1), 0, count - 1))
        else:
            a, drivers = self.replays[int(rng.integers(len(self.replays)))]
            b = drivers[int(rng.integers(len(drivers)))]
            t_drv = int(rng.integers(self.clips[b].frames))
            t_src = int(rng.integers(self.clips[a].frames)) if self.any_portrait_frame else 0
        source, driving = self.frames.frame(a, t_src), self.frames.frame(b, t_drv)
        target = driving if a == b else self.frames.frame(a, t_drv)
        item = {
            "source": source["image"],
            "driving": driving["image"],
            "target": target["image"],
            "source_params": source["params"],
            "driving_params": driving["params"],
            "driving_param_mask": driving["param_mask"],
            "identity": torch.tensor(self.identity[self.clips[a].character]),
            "driving_identity": torch.tensor(self.identity[self.clips[b].character]),
        }
        if self.with_reference:
            item["driving_first"] = source["image"] if a == b else self.frames.frame(b, t_src)["image"]
        if self.ground_truth:
            item.update(source_regions=source["regions"], driving_regions=driving["regions"], target_regions=target["regions"],
                        source_keypoints=source["keypoints"], driving_keypoints=driving["keypoints"])
        return item


class PuppetShare(Dataset):
    """Procedural puppet pairs mixed into Live2D training: identities numbered after the clips' characters (so
    identity labels do not collide) and the clips' keys.

    Args:
        pairs: the puppet pairs (:class:`~datamodules.puppet_datamodule.PuppetPairs`, ``self`` mode).
        first_identity: the label of puppet 0.
        ground_truth: the clips' pairs carry region maps and keypoints (else the puppets' are dropped).
        with_reference: items carry ``driving_first`` (the portrait: a self pair), as the clips' pairs do
            alongside cross-identity pairs.
    """

    def __init__(self, pairs: PuppetPairs, first_identity: int, ground_truth: bool, with_reference: bool = False) -> None:
        self.pairs, self.first_identity, self.with_reference = pairs, first_identity, with_reference
        self.dropped = () if ground_truth else ("source_regions", "driving_regions", "source_keypoints", "driving_keypoints")
        self.ground_truth = ground_truth

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = {k: v for k, v in self.pairs[index].items() if k not in self.dropped}
        for key in ("identity", "driving_identity"):
            item[key] = item[key] + self.first_identity
        if self.with_reference:
            item["driving_first"] = item["source"]
        if self.ground_truth:  # as the clips' pairs: the target is the driving frame
            item["target_regions"] = item["driving_regions"]
        return item


# The default split over the seventeen characters of ../shared/live2d (README, "Characters and split"): Mark and
# Rice (Cubism 3, held out since the first split, so numbers compare across versions), Epsilon (Cubism 2) and both
# cats, Hijiki and Tororo (one Cubism 2 rig in two colourings: training on one would leak the other's geometry).
# Twelve characters train: Haru, Hiyori, Mao, Wanko (a dog) and Haruto, Hibiki, Koharu, Miku, Nipsilon, Shizuku,
# Tsumiki, Z16.
DEFAULT_HELD_OUT: tuple[str, ...] = ("Mark", "Rice", "Epsilon", "Hijiki", "Tororo")


class Live2DClipDataModule(PairDataModule):
    """Rendered Live2D clips, split by character.

    Args:
        root: dataset folder written by ``python -m lightning_app.render``.
        image_size: square frame size fed to the model (linked to the model by the CLI).
        batch_size: pairs per batch.
        num_workers: DataLoader worker processes.
        held_out: characters kept out of training, used for validation and test; unset, those of
            :data:`DEFAULT_HELD_OUT` that the dataset has.
        train_pairs: pairs per training epoch.
        val_pairs: validation pairs (deterministic).
        test_pairs: test pairs (deterministic).
        val_mode: pair mode for validation.
        test_mode: pair mode of the ``test_pairs`` (test without ``test_protocols``).
        max_gap: largest frame distance in a self pair.
        background: RGB 0–255 colour behind the characters.
        seed: fixes the pairs.
        augmentation: random augmentation of training pairs (e.g. ``datamodules.augmentation.PairAugmentation``).
        test_protocols: evaluation protocols for test (``self``, ``cross``; see :mod:`datamodules.protocols`) on
            training and held-out characters; unset, test uses ``test_pairs`` random pairs of ``test_mode``.
        test_clips: clips per split and protocol (taken from the characters in turn).
        test_clip_frames: frames per evaluation clip.
        without_ground_truth: what to do with clips that have no region maps and keypoints (imported video, a
            model whose face the renderer could not label) when other clips have them: ``skip`` leaves them out
            (with a warning naming them), so batches keep the ground truth; ``keep`` uses them and drops the
            ground truth from every batch.
        puppet_fraction: share of the training pairs that are procedural puppets (:class:`PuppetShare`) instead
            of Live2D clips — many more identities to learn motion from than the training characters; validation
            and test stay on the clips. 0: clips only.
        puppet_identities: how many puppet identities those pairs draw from.
        cross_fraction: share of the training pairs that are cross-identity pairs among the training characters
            (their replayed trajectories; the portrait at any frame of it): the target is the portrait's
            character in the driver's pose, so motion must be read apart from the driver's face. Their
            ``driving_regions``/``driving_keypoints`` are the driver's (of the driving frame); ``target_regions``
            are the target's (every training pair carries them with ground truth: the driving frame's in self pairs).
            Training batches then carry ``driving_first``, the driver at the portrait's frame (the portrait for
            self pairs), and the animator transfers the driver's change relatively, as it does at test time.
            0: self pairs only.
    """

    def __init__(
        self,
        root: str,
        image_size: int = 128,
        batch_size: int = 8,
        num_workers: int = 2,
        held_out: list[str] | None = None,
        train_pairs: int = 20000,
        val_pairs: int = 64,
        test_pairs: int = 256,
        val_mode: PairMode = "self",
        test_mode: PairMode = "cross",
        max_gap: int = 30,
        background: tuple[int, int, int] = (255, 255, 255),
        seed: int = 0,
        augmentation: PairAugmentation | None = None,
        test_protocols: list[PairMode] | None = None,
        test_clips: int = 4,
        test_clip_frames: int = 30,
        without_ground_truth: Literal["skip", "keep"] = "skip",
        puppet_fraction: float = 0.0,
        puppet_identities: int = 512,
        cross_fraction: float = 0.0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["augmentation"])
        self.keep_settings(image_size, batch_size, num_workers, augmentation, test_protocols, test_clips, test_clip_frames)
        clips, bad = index_clips(root)
        if bad:
            warnings.warn(f"skipping {len(bad)} bad clip(s) under {root}:\n  " + "\n  ".join(bad), stacklevel=2)
        if not clips:
            raise UserFacingError(f"no clips under {root!r}; render them with: python -m lightning_app.render --models ... --out {root}")
        lacking = [c for c in clips if not set(GROUND_TRUTH) <= set(c.ground_truth)]
        if lacking and len(lacking) < len(clips) and without_ground_truth == "skip":
            names = sorted({c.character for c in lacking})
            warnings.warn(f"leaving out {len(lacking)} clip(s) without region maps and keypoints ({', '.join(names)}) so that batches keep "
                          "the ground truth of the others; data.init_args.without_ground_truth=keep uses them and drops it", stacklevel=2)
            clips = [c for c in clips if c not in lacking]
        characters = sorted({c.character for c in clips})
        held = set(held_out) if held_out is not None else {c for c in DEFAULT_HELD_OUT if c in characters}
        unknown = held - set(characters)
        if unknown:
            raise UserFacingError(f"held_out names characters not in {root!r}: {', '.join(sorted(unknown))} (found {', '.join(characters)})")
        if not held or held == set(characters):
            default = "" if held_out is not None else f" (the default split holds out {', '.join(DEFAULT_HELD_OUT)}; give held_out)"
            raise UserFacingError(f"held_out must name some but not all of the characters in {root!r}: {', '.join(characters)}{default}")
        train = [c for c in characters if c not in held]
        evaluation = sorted(held)
        common = {"image_size": image_size, "max_gap": max_gap, "background": background}
        if not 0.0 <= cross_fraction < 1.0:
            raise UserFacingError(f"cross_fraction must be in [0, 1), got {cross_fraction}")
        cross = round(train_pairs * cross_fraction)
        self.train_set = Live2DClipPairs(clips, train, train_pairs - cross, mode="self", seed=seed, with_reference=cross > 0, **common)
        self.train_cross = Live2DClipPairs(clips, train, cross, mode="cross", seed=seed + 4, drivers=train, any_portrait_frame=True,
                                           with_reference=True, **common) if cross else None
        self.val_set = Live2DClipPairs(clips, evaluation, val_pairs, mode=val_mode, seed=seed + 1, **common)
        self.test_set = Live2DClipPairs(clips, evaluation, test_pairs, mode=test_mode, seed=seed + 2, **common)
        self._split = {"train": set(train), "held_out": held}
        if not 0.0 <= puppet_fraction < 1.0 or puppet_identities < 1:
            raise UserFacingError(f"puppet_fraction must be in [0, 1) and puppet_identities at least 1, got {puppet_fraction} and {puppet_identities}")
        self.puppet_pairs = None
        if puppet_fraction > 0:
            count = round(train_pairs * puppet_fraction / (1.0 - puppet_fraction))
            self.puppet_pairs = PuppetShare(PuppetPairs(list(range(puppet_identities)), count, image_size, seed + 3), len(self.train_set.identity),
                                            ground_truth=self.train_set.ground_truth, with_reference=cross > 0)

    def train_dataloader(self) -> DataLoader:
        parts = [p for p in (self.train_set, self.train_cross, self.puppet_pairs) if p is not None]
        return self._loader(parts[0] if len(parts) == 1 else ConcatDataset(parts), shuffle=True)

    def require_parameters(self) -> None:
        train = [c for c in self.train_set.clips if c.character in self._split["train"]]
        if all(c.source == "video" for c in train):
            names = ", ".join(f"{c.character}/{c.name}" for c in train[:8]) + (", ..." if len(train) > 8 else "")
            raise UserFacingError(
                f"this descriptor learns from ground-truth parameters, but every training clip under {self.hparams.root!r} is "
                f"imported footage without them ({names}); render Live2D clips into the dataset too, or use a descriptor "
                "that needs no parameters (configs/keypoints.yaml)"
            )

    def evaluation_clips(self, split: Split) -> list[EvaluationClip]:
        pairs = self.test_set
        return [
            EvaluationClip(c.character, pairs.identity[c.character], c.frames, c.seed if c.source == "replay" else None, i)
            for i, c in enumerate(pairs.clips) if c.character in self._split[split]
        ]

    def evaluation_reader(self) -> ClipFrames:
        return self.test_set.frames
