"""``SampleGrid``: source | driving | prediction (| target) grids after each validation, on disk and in the logger."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from core.files import atomic_write_bytes
from core.run_folder import run_folder


class SampleGrid(Callback):
    """Save a grid of the first validation batch's samples after every validation run.

    Each row is one pair: source | driving | prediction, plus target where it differs from the driving frame
    (cross-identity pairs). PNGs go to ``<run folder>/<dirname>/step_<global step>.png``; the grid is also sent
    to TensorBoard (``add_image``) and W&B (``log_image``) loggers under ``val/samples``.

    Args:
        num_samples: rows in the grid.
        dirname: folder inside the run folder.
    """

    def __init__(self, num_samples: int = 8, dirname: str = "samples") -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be positive, got {num_samples}")
        self.num_samples, self.dirname = num_samples, dirname
        self._columns: list[torch.Tensor] | None = None
        self.last_path: Path | None = None

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._columns = None

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if batch_idx != 0 or dataloader_idx != 0 or trainer.sanity_checking or not isinstance(outputs, dict):
            return
        n = self.num_samples
        columns = [batch["source"][:n], batch["driving"][:n], outputs["prediction"][:n]]
        target = batch.get("target")
        if target is not None and not torch.equal(target, batch["driving"]):
            columns.append(target[:n])
        self._columns = [c.detach().float().clamp(0, 1).cpu() for c in columns]

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = run_folder(trainer)  # a collective under DDP: every rank asks
        if self._columns is None or not trainer.is_global_zero:
            return
        rows = torch.stack(self._columns, dim=1).flatten(0, 1)  # N·columns × 3 × H × W, row-major
        grid = make_grid(rows, nrow=len(self._columns), padding=2, pad_value=1.0)
        path = folder / self.dirname / f"step_{trainer.global_step:07d}.png"
        buffer = io.BytesIO()
        save_image(grid, buffer, format="png")
        atomic_write_bytes(path, buffer.getvalue())
        self.last_path = path
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("val/samples", grid, global_step=trainer.global_step)
            elif isinstance(logger, WandbLogger):
                logger.log_image(key="val/samples", images=[grid], step=trainer.global_step)
