"""``LRSchedule``: linear warm-up then cosine decay (or cosine with warm restarts), stepped per optimizer step."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim.lr_scheduler import CosineAnnealingLR, CosineAnnealingWarmRestarts, LinearLR, LRScheduler, SequentialLR


class LRSchedule(Callback):
    """Learning-rate schedule built from torch's schedulers and stepped once per optimizer step.

    The optimizer's configured ``lr`` is the peak. The scheduler state is saved in checkpoints, so a resumed run
    continues the schedule exactly where it stopped. Logs ``train/lr`` (first parameter group).

    Args:
        kind: ``"cosine"`` — one cosine decay to ``min_lr_ratio·lr`` over ``total_steps``;
            ``"cosine_restarts"`` — cosine cycles of ``restart_period`` steps, each ``restart_mult`` times longer.
        warmup_steps: linear warm-up from ``warmup_start_ratio·lr`` to ``lr``.
        total_steps: steps of the whole schedule, warm-up included; ``None`` takes the trainer's
            ``estimated_stepping_batches``.
        min_lr_ratio: the floor as a fraction of the peak ``lr``.
        warmup_start_ratio: the first warm-up step's fraction of the peak ``lr``.
        restart_period: first cycle length in steps (``cosine_restarts``).
        restart_mult: cycle length multiplier (``cosine_restarts``).
    """

    def __init__(
        self,
        kind: Literal["cosine", "cosine_restarts"] = "cosine",
        warmup_steps: int = 200,
        total_steps: int | None = None,
        min_lr_ratio: float = 0.01,
        warmup_start_ratio: float = 0.01,
        restart_period: int = 1000,
        restart_mult: int = 2,
    ) -> None:
        if warmup_steps < 0 or restart_period < 1 or restart_mult < 1:
            raise ValueError("warmup_steps must be >= 0, restart_period >= 1 and restart_mult >= 1")
        if not 0 < warmup_start_ratio <= 1 or not 0 <= min_lr_ratio <= 1:
            raise ValueError("warmup_start_ratio must be in (0, 1] and min_lr_ratio in [0, 1]")
        self.kind, self.warmup_steps, self.total_steps = kind, warmup_steps, total_steps
        self.min_lr_ratio, self.warmup_start_ratio = min_lr_ratio, warmup_start_ratio
        self.restart_period, self.restart_mult = restart_period, restart_mult
        self.schedulers: list[LRScheduler] = []
        self._stepped_at = 0
        self._pending: dict[str, Any] | None = None

    def _build(self, optimizer: torch.optim.Optimizer, total_steps: int) -> LRScheduler:
        eta_min = self.min_lr_ratio * optimizer.param_groups[0]["lr"]
        if self.kind == "cosine":
            decay: LRScheduler = CosineAnnealingLR(optimizer, T_max=max(1, total_steps - self.warmup_steps), eta_min=eta_min)
        else:
            decay = CosineAnnealingWarmRestarts(optimizer, T_0=self.restart_period, T_mult=self.restart_mult, eta_min=eta_min)
        if self.warmup_steps == 0:
            return decay
        warmup = LinearLR(optimizer, start_factor=self.warmup_start_ratio, end_factor=1.0, total_iters=self.warmup_steps)
        return SequentialLR(optimizer, [warmup, decay], milestones=[self.warmup_steps])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        total = self.total_steps if self.total_steps is not None else int(trainer.estimated_stepping_batches)
        if self.kind == "cosine" and total <= self.warmup_steps:
            rank_zero_warn(f"LRSchedule: warmup_steps ({self.warmup_steps}) >= total_steps ({total}); warming up for {total // 2} steps")
            self.warmup_steps = total // 2
        self.schedulers = [self._build(opt, total) for opt in trainer.optimizers]
        self._stepped_at = trainer.global_step
        if self._pending is not None:
            states = self._pending["schedulers"]
            if len(states) != len(self.schedulers):
                raise ValueError(f"LRSchedule: checkpoint has {len(states)} schedules, the run has {len(self.schedulers)} optimizers")
            for scheduler, state in zip(self.schedulers, states):
                scheduler.load_state_dict(state)
                for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
                    group["lr"] = lr
            self._pending = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > self._stepped_at:  # an optimizer step happened (not a gradient-accumulation batch)
            self._stepped_at = trainer.global_step
            for scheduler in self.schedulers:
                scheduler.step()
        if self.schedulers:
            pl_module.log("train/lr", self.schedulers[0].get_last_lr()[0], on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"schedulers": [s.state_dict() for s in self.schedulers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict
