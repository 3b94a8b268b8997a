"""Animated clips as videos: ``cli.py predict`` writes the data's evaluation clips, ``fit`` ends with one.

Each clip becomes ``<group>_clip<n>.mp4`` (one frame per driving frame, panels portrait | driving | output |
target side by side) and ``<group>_clip<n>.png`` (four of its frames stacked), where ``group`` is the protocol,
prediction kind and split of :meth:`~modules.AnimatorModule.test_groups` (``self_held_out``,
``cross_relative_held_out``, …):

* ``predict`` — every clip of the DataModule's predict loaders (:attr:`~datamodules.PairDataModule.predict_names`:
  self-reenactment and cross-identity on held-out characters) → ``<run>/predictions/``;
* end of ``fit`` — the first ``after_fit`` held-out clips self-reenacted → ``<run>/samples/final_*``, so every
  training run leaves a video of what it learnt (a copy of the portrait shows as a still face in the output
  panel while the driving panel moves).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from core.files import atomic_video, atomic_write_png
from core.run_folder import run_folder


class ClipSamples:
    """Frames of animated clips, gathered batch by batch and written as videos and still grids.

    Args:
        max_clips: clips kept per group (the sequences numbered below it); ``None`` keeps every one.
        fps: frame rate of the videos.
    """

    def __init__(self, max_clips: int | None = None, fps: float = 15.0) -> None:
        self.max_clips, self.fps = max_clips, fps
        self.frames: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)

    def add(self, group: str, prediction: Tensor, batch: dict[str, Tensor]) -> None:
        """Keep one row per item: portrait | driving | ``prediction`` | target (``B×3×H×W`` in ``[0, 1]``), by the
        batch's ``sequence`` and ``frame``."""
        for i, (sequence, frame) in enumerate(zip(batch["sequence"].tolist(), batch["frame"].tolist())):
            if self.max_clips is None or sequence < self.max_clips:
                row = torch.cat([batch["source"][i], batch["driving"][i], prediction[i], batch["target"][i]], dim=-1)
                self.frames[(group, sequence)][frame] = (row.clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)

    def write(self, folder: Path, prefix: str = "") -> list[Path]:
        """Write every clip into ``folder`` (``<prefix><group>_clip<n>.mp4`` and ``.png``); returns the videos."""
        videos = []
        for (group, sequence), by_frame in sorted(self.frames.items()):
            frames = [by_frame[t] for t in sorted(by_frame)]
            stem = f"{prefix}{group.replace('/', '_')}_clip{sequence}"
            height, width = frames[0].shape[:2]
            with atomic_video(folder / f"{stem}.mp4", self.fps, width, height) as write:
                for frame in frames:
                    write(frame)
            atomic_write_png(folder / f"{stem}.png", np.concatenate(frames[:: max(1, len(frames) // 4)][:4], axis=0))
            videos.append(folder / f"{stem}.mp4")
        self.frames.clear()
        return videos


class ClipWriter(BasePredictionWriter):
    """Videos of animated clips from ``predict`` and at the end of ``fit`` (see the module docstring).

    Args:
        after_fit: held-out clips self-reenacted and written when ``fit`` ends (0: none); needs a DataModule with
            evaluation clips (puppets, rendered Live2D clips) — others are skipped with a note.
        fps: frame rate of the videos.
    """

    def __init__(self, after_fit: int = 1, fps: float = 15.0) -> None:
        super().__init__(write_interval="batch")
        if after_fit < 0 or fps <= 0:
            raise ValueError(f"after_fit must be ≥ 0 and fps positive, got {after_fit} and {fps}")
        self.after_fit = after_fit
        self.samples = ClipSamples(fps=fps)

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Any, batch_indices: Any,
                           batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if "sequence" not in batch:
            return
        for kind, group in prediction["groups"].items():
            self.samples.add(group or "pairs", prediction["predictions"][kind], batch)

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_folder(trainer) / "predictions"
        if trainer.is_global_zero:
            videos = self.samples.write(folder)
            rank_zero_info(f"predict: wrote {len(videos)} videos and grids into {folder}")

    @torch.no_grad()
    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not self.after_fit or datamodule is None:
            return
        folder = run_folder(trainer) / "samples"  # a collective under DDP
        if not trainer.is_global_zero:
            return
        try:
            loader = datamodule.protocol_loader("self/held_out", self.after_fit)
        except NotImplementedError:
            rank_zero_info(f"ClipWriter: {type(datamodule).__name__} has no evaluation clips; no final video")
            return
        samples = ClipSamples(fps=self.samples.fps)
        was_training = pl_module.training
        pl_module.eval()
        for batch in loader:
            batch = {k: v.to(pl_module.device) for k, v in batch.items()}
            samples.add("self_held_out", pl_module.animate(batch["source"], batch["driving"])["absolute"], batch)
        pl_module.train(was_training)
        videos = samples.write(folder, prefix="final_")
        rank_zero_info("final animation (portrait | driving | output | target): " + ", ".join(str(v) for v in videos))
