"""``GradientNormClipping``: clip the global gradient norm before each optimizer step and log it."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class GradientNormClipping(Callback):
    """Clip gradients to a maximum global norm and log the norm measured before clipping.

    Runs in ``on_before_optimizer_step``, after mixed-precision gradients are unscaled, so the threshold is
    in true gradient units under every ``precision``. Logs ``train/grad_norm`` (pre-clip) and
    ``train/grad_clipped`` (1 when the norm exceeded the threshold).

    Args:
        max_norm: the largest allowed global norm (default 1.0).
        norm_type: p of the p-norm (2 for Euclidean, ``inf`` for max-abs).
    """

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0) -> None:
        if max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        self.max_norm, self.norm_type = max_norm, norm_type
        self.clipped_steps = 0

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)
        clipped = bool(norm > self.max_norm)
        self.clipped_steps += int(clipped)
        pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
        pl_module.log("train/grad_clipped", float(clipped), on_step=True, on_epoch=False)

    def state_dict(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "norm_type": self.norm_type, "clipped_steps": self.clipped_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.clipped_steps = int(state_dict.get("clipped_steps", 0))
