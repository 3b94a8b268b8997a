"""``RunProgress``: the progress of the whole run (optimizer steps of ``max_steps``, its rate and ETA), as a bar on
a terminal and as plain lines in a log file."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


def duration(seconds: float) -> str:
    """``H:MM:SS`` (``M:SS`` under an hour); ``?`` for an unknown (infinite or NaN) duration."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_line(step: int, total: float, first_step: int, elapsed: float, metrics: dict[str, Any]) -> str:
    """One plain progress line: ``step 301/3000 (10 %) · 2.1 steps/s · elapsed 2:24 · ETA 21:30 · train/loss 0.0412``.

    Args:
        step: optimizer steps done; ``first_step``: where this process started (a resumed run's checkpoint step),
            so that the rate counts only steps this process made.
        total: the run's steps (``inf`` when unknown: no percentage, no ETA).
        elapsed: seconds since this process's training started.
        metrics: shown after the times (numbers with 4 significant digits).
    """
    rate = (step - first_step) / elapsed if elapsed > 0 else 0.0
    known = math.isfinite(total) and total > 0
    parts = [f"step {step}/{int(total)} ({100 * step / total:.0f} %)" if known else f"step {step}",
             f"{rate:.2f} steps/s", f"elapsed {duration(elapsed)}"]
    if known:
        parts.append(f"ETA {duration((total - step) / rate) if rate > 0 else '?'}")
    parts += [f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}" for name, value in metrics.items()]
    return " · ".join(parts)


class RunProgress(RichProgressBar):
    """Progress of the run, not of an epoch.

    On a terminal, Lightning's Rich bars with the training bar over the run's optimizer steps (``Training``,
    ``301/3000``, the run's ETA) instead of one epoch's batches (``Epoch 0/-2 … 301/2500``). When stdout is not a
    terminal (redirected to a file, a pipe, a job log) the bars print nothing, so there are none; instead a
    :func:`progress_line` every ``interval`` seconds and one when training ends. :class:`~lightning_app.cli.AnimatorCLI`
    adds it unless the trainer's callbacks have a progress bar or ``enable_progress_bar`` is false.

    Args:
        interval: seconds between plain lines (positive).
    """

    def __init__(self, interval: float = 30.0) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        super().__init__()
        self.interval = interval
        self.plain = not sys.stdout.isatty()
        if self.plain:
            self.disable()  # before the sanity check's bar
        self._started = self._last_line = 0.0
        self._first_step, self._total = 0, math.inf

    @property
    def total_train_batches(self) -> int | float:
        """The run's optimizer steps once training started (the bar's total), else Lightning's per-epoch count."""
        return self._total if math.isfinite(self._total) else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        return "Training"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = self._last_line = time.monotonic()
        self._first_step = trainer.global_step
        self._total = trainer.max_steps if trainer.max_steps > 0 else float(trainer.estimated_stepping_batches)
        super().on_train_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_start(trainer, pl_module)
        self._update(self.train_progress_bar_id, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self.plain:
            if self.train_progress_bar_id is None:  # resumed mid-epoch
                self._initialize_train_progress_bar_id()
            self._update(self.train_progress_bar_id, trainer.global_step)
            self._update_metrics(trainer, pl_module)
            self.refresh()
            return
        now = time.monotonic()
        if now - self._last_line >= self.interval and trainer.is_global_zero:
            self._last_line = now
            self._print_line(trainer, pl_module, now)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if self.plain and trainer.is_global_zero:
            self._print_line(trainer, pl_module, time.monotonic())

    def _print_line(self, trainer: L.Trainer, pl_module: L.LightningModule, now: float) -> None:
        metrics = {k: v for k, v in self.get_metrics(trainer, pl_module).items() if k != "v_num"}
        print(progress_line(trainer.global_step, self._total, self._first_step, now - self._started, metrics), flush=True)
