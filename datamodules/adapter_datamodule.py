"""``AdapterPairDataModule``: training pairs of the landmark adapter, by either route of
:mod:`datamodules.adapter_pairs` or both, split into training and validation.

Batches:

* training — ``(features, targets, parameters)``: ``B×W×F`` face features of the last ``W`` frames (``W`` = the
  adapter's window), ``B×D`` the descriptor vector of the last frame's pose, ``B×P`` its standard parameters
  normalised to ``[0, 1]``; shuffled windows of the training sequences;
* validation — one :class:`SequenceWindows` per batch: every window of one clip or video, of every route and both
  splits (the report compares training with held-out sequences).

Clips of ``held_out`` characters and the ``held_out_videos`` (by stem) are validation only; human poses are
rendered on the ``characters`` that are not held out. The pairs are built once, in :meth:`setup` (MediaPipe,
rendering and describing are the slow part, and cached: see :mod:`datamodules.adapter_pairs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, TensorDataset

from core.errors import UserFacingError
from datamodules.adapter_pairs import PairSequence, TargetSpace, human_pairs, live2d_pairs, windows
from datamodules.face_landmarks import FaceTracker
from datamodules.live2d.clips import index_clips
from datamodules.live2d.model_files import find_models
from datamodules.live2d_datamodule import DEFAULT_HELD_OUT

ROUTES = ("live2d", "human")
SPLITS = ("train", "val")


@dataclass
class SequenceWindows:
    """Every window of one sequence, for validation (not frozen: Lightning moves its tensors to the device).

    Attributes:
        route: ``"live2d"`` (rendered clips) or ``"human"`` (videos).
        split: ``"train"`` or ``"val"``.
        name: the clip (``character/clip``) or video.
        features: ``N×W×F``; targets: ``N×D``; parameters: ``N×P`` in ``[0, 1]`` (see :func:`windows`).
    """

    route: str
    split: str
    name: str
    features: torch.Tensor
    targets: torch.Tensor
    parameters: torch.Tensor


class AdapterPairDataModule(LightningDataModule):
    """Pairs of (face features, descriptor vector) for :class:`modules.adapter_module.AdapterModule`.

    Args:
        landmarker: MediaPipe's ``face_landmarker.task``.
        clips: route 1, rendered Live2D clips (``python -m lightning_app.render``).
        held_out: characters kept for validation and not rendered with human poses (default: the default split).
        videos: route 2, human face videos.
        held_out_videos: stems of the videos kept for validation (a video given only to be held out evaluates a
            Live2D-only adapter on human faces).
        models: the Live2D model folders human poses are rendered on (route 2).
        characters: only these model folders (route 2; default: all that are not held out).
        cache: route 2's faces and renders.
        max_video_frames: read at most this many frames of each video.
        window: frames per input; linked from the model's ``window`` by the adapter CLI.
        batch_size: training windows per step.
        detect_size: rendered frames are upscaled to this side for MediaPipe.
        workers: rendering processes (route 2).
        target_space: what labels the pairs (the adapter CLI links the model itself); needed by :meth:`setup`.

    Raises:
        UserFacingError: no route given, videos without models, or a file or folder that is not there.
    """

    def __init__(
        self,
        landmarker: str,
        clips: str | None = None,
        held_out: Sequence[str] = DEFAULT_HELD_OUT,
        videos: Sequence[str] = (),
        held_out_videos: Sequence[str] = (),
        models: str | None = None,
        characters: Sequence[str] | None = None,
        cache: str = "data/human_pairs",
        max_video_frames: int | None = None,
        window: int = 1,
        batch_size: int = 64,
        detect_size: int = 256,
        workers: int = 2,
        target_space: TargetSpace | None = None,
    ) -> None:
        super().__init__()
        if clips is None and not videos:
            raise UserFacingError("give training pairs: data.clips (rendered Live2D clips) and/or data.videos (human videos, with data.models)")
        if videos and models is None:
            raise UserFacingError("data.videos needs data.models (the Live2D model folders to render the human's parameters on)")
        missing = [f"data.{key} {value!r}" for key, value, exists in
                   [("landmarker", landmarker, Path(landmarker).is_file()), ("clips", clips, clips is None or Path(clips).is_dir()),
                    ("models", models, models is None or Path(models).is_dir()), *(("videos", v, Path(v).is_file()) for v in videos)]
                   if not exists]
        if missing:
            raise UserFacingError(f"not found: {', '.join(missing)}")
        if window < 1 or batch_size < 1:
            raise UserFacingError(f"data.window and data.batch_size must be at least 1, got {window} and {batch_size}")
        self.landmarker, self.clips, self.held_out = Path(landmarker), Path(clips) if clips else None, tuple(held_out)
        self.videos, self.held_out_videos = tuple(Path(v) for v in videos), tuple(held_out_videos)
        self.models, self.characters = Path(models) if models else None, list(characters) if characters else None
        self.cache, self.max_video_frames, self.window, self.batch_size = Path(cache), max_video_frames, window, batch_size
        self.detect_size, self.workers, self.target_space = detect_size, workers, target_space
        self.routes: dict[str, list[PairSequence]] = {}
        self._train: TensorDataset | None = None
        self._validation: list[SequenceWindows] = []

    def setup(self, stage: str) -> None:
        if self._train is not None:
            return
        if self.target_space is None:
            raise UserFacingError("AdapterPairDataModule needs target_space (the model that labels the pairs); the adapter CLI links it")
        if self.clips is not None:
            found, bad = index_clips(self.clips)
            if not found:
                raise UserFacingError(f"no clips under {str(self.clips)!r}" + (f" ({len(bad)} damaged)" if bad else ""))
            tracker = FaceTracker(self.landmarker, video=False, min_detection=0.3, min_presence=0.0)
            self.routes["live2d"] = live2d_pairs(self.target_space, found, tracker, self.detect_size)
            tracker.close()
        if self.videos:
            renderable = {name: path for name, path in find_models(self.models, self.characters).items() if name not in self.held_out}
            if not renderable:
                raise UserFacingError(f"every model under {str(self.models)!r} is held out; human poses need a training character to be rendered on")
            self.routes["human"] = [human_pairs(self.target_space, v, self.landmarker, renderable, self.cache, self.max_video_frames, self.workers)
                                    for v in self.videos]
        train_parts = []
        for route, sequences in self.routes.items():
            held = self.held_out if route == "live2d" else self.held_out_videos
            for sequence in sequences:
                split = "val" if sequence.group in held else "train"
                features, targets, parameters = windows(sequence, self.window)
                self._validation.append(SequenceWindows(route, split, sequence.name, features, targets, parameters))
                if split == "train":
                    train_parts.append((features, targets, parameters))
        train = [torch.cat(column) for column in zip(*train_parts)] if train_parts else [torch.zeros(0)] * 3
        if len(train[0]) < self.batch_size:
            raise UserFacingError(f"only {len(train[0])} training windows with a detected face (data.batch_size is {self.batch_size}); "
                                  "render more clips or give more videos")
        self._train = TensorDataset(*train)

    def train_windows(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All training windows: features ``N×W×F``, targets ``N×D``, parameters ``N×P`` (for the adapter's
        standardisation and the cycle maps)."""
        if self._train is None:
            raise RuntimeError("AdapterPairDataModule.train_windows before setup")
        return self._train.tensors

    def face_rates(self) -> dict[str, float]:
        """The mean fraction of frames with a detected face, per route."""
        return {route: float(np.mean([(~s.features.isnan().any(1)).float().mean().item() for s in sequences]))
                for route, sequences in self.routes.items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._train, batch_size=self.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._validation, batch_size=None, shuffle=False)
