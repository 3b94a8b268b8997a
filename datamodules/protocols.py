"""Evaluation protocols over clips with ground truth: self-reenactment and cross-identity reenactment.

``self``  — FOMM's reconstruction protocol: the first frame of a clip is the portrait, every frame of the same
            clip drives it, and the real frame is the target.
``cross`` — the portrait is character A's first (neutral) frame of a replayed trajectory; character B's frame t
            of the same trajectory drives; the target is A's frame t (A rendered at B's parameters), which
            only rendered data has. Items also carry the driver's first frame, for relative motion transfer.

Characters are split: each protocol runs on training characters' portraits and on held-out characters'
portraits (drivers may be any other character). Items are enumerated in clip order, so consecutive items of
one ``sequence`` are consecutive frames (for temporal metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from core.batch import PairMode

Split = Literal["train", "held_out"]


@dataclass(frozen=True)
class EvaluationClip:
    """A clip that a protocol can read frame by frame.

    Attributes:
        character: character name.
        identity: the character's integer label (as in training batches).
        length: number of frames.
        replay: the trajectory this clip shares with other characters' clips, or ``None``.
        key: how the owning DataModule finds the clip's frames.
    """

    character: str
    identity: int
    length: int
    replay: int | None
    key: object


FrameReader = Callable[[EvaluationClip, int], dict[str, Tensor]]
"""``(clip, t)`` → ``image`` ``3×H×W`` in ``[0, 1]``, ``params`` ``P`` and, where known, ``keypoints`` ``K×2``
(pixels) and ``regions``."""


class ProtocolPairs(Dataset):
    """The items of one protocol on one split.

    Args:
        portraits: clips whose characters are animated (the split's characters).
        drivers: every clip that may drive a cross-identity portrait (any character).
        read: reads a frame of a clip.
        protocol: ``"self"`` or ``"cross"``.
        frames: frames used per clip (from the start).

    Items: the keys of :class:`core.batch.EvaluationBatch` (``target_keypoints`` and ``target_regions`` where the
    reader gives them).
    """

    def __init__(self, portraits: list[EvaluationClip], drivers: list[EvaluationClip], read: FrameReader, protocol: PairMode, frames: int) -> None:
        self.read, self.protocol = read, protocol
        self.pairs: list[tuple[EvaluationClip, EvaluationClip]] = []
        if protocol == "self":
            self.pairs = [(clip, clip) for clip in portraits]
        else:
            for clip in portraits:
                others = [d for d in drivers if d.replay is not None and d.replay == clip.replay and d.character != clip.character]
                if others:
                    self.pairs.append((clip, others[(clip.identity + clip.replay) % len(others)]))  # type: ignore[operator]
        if not self.pairs:
            raise ValueError(f"no clips for the {protocol!r} protocol (cross-identity needs replayed trajectories shared by two characters)")
        self.items = [(s, t) for s, (a, b) in enumerate(self.pairs) for t in range(min(frames, a.length, b.length))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        sequence, t = self.items[index]
        portrait, driver = self.pairs[sequence]
        source, driving, driving_first = self.read(portrait, 0), self.read(driver, t), self.read(driver, 0)
        target = driving if portrait is driver else self.read(portrait, t)
        item = {
            "source": source["image"], "driving": driving["image"], "driving_first": driving_first["image"], "target": target["image"],
            "source_params": source["params"], "driving_params": driving["params"],
            "identity": torch.tensor(portrait.identity), "driving_identity": torch.tensor(driver.identity),
            "sequence": torch.tensor(sequence), "frame": torch.tensor(t),
        }
        if "keypoints" in target:
            item["target_keypoints"] = target["keypoints"]
        if "regions" in target:
            item["target_regions"] = target["regions"]
        return item
