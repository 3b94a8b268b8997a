"""Loss terms of the landmark adapter (:class:`modules.adapter.LandmarkAdapter`), on standardised descriptor
vectors ``N×D``: InfoNCE across a batch, and cycle consistency descriptor → parameters → descriptor."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from modules.probes import ridge_fit

CYCLE_RIDGE = 1.0


def info_nce(predicted: Tensor, target: Tensor, temperature: float = 0.1) -> Tensor:
    """Each prediction (``N×D``) against every target in the batch; its own target is the positive."""
    logits = F.normalize(predicted, dim=1) @ F.normalize(target, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


class CycleMaps:
    """Linear maps between standardised descriptor vectors ``z`` (``N×D``) and normalised parameters ``p``
    (``N×P``), fitted by ridge regression: ``parameters(z)`` and ``descriptor(p)``."""

    def __init__(self, z: Tensor, p: Tensor) -> None:
        self.to_p = ridge_fit(z.double(), p.double(), CYCLE_RIDGE)
        self.to_z = ridge_fit(p.double(), z.double(), CYCLE_RIDGE)

    def parameters(self, z: Tensor) -> Tensor:
        weights, bias = self.to_p
        return z @ weights.to(z.dtype) + bias.to(z.dtype)

    def descriptor(self, p: Tensor) -> Tensor:
        weights, bias = self.to_z
        return p @ weights.to(p.dtype) + bias.to(p.dtype)

    def cycle_loss(self, z: Tensor) -> Tensor:
        return F.mse_loss(self.descriptor(self.parameters(z)), z)
