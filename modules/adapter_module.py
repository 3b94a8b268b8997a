"""``AdapterModule``: trains the landmark adapter (:class:`modules.adapter.LandmarkAdapter`) of a trained animator.

The animator is loaded from its checkpoint and frozen: its descriptor labels the training pairs (the module is
the :class:`~datamodules.adapter_pairs.TargetSpace` of :class:`~datamodules.adapter_datamodule.AdapterPairDataModule`,
linked by the adapter CLI) and only the adapter learns. Losses, on descriptor vectors standardised by the
training targets:

* regression: smooth L1 to the target;
* contrastive: InfoNCE across the batch (each prediction closest to its own target);
* cycle consistency: descriptor → parameters → descriptor through two linear maps fitted (ridge) on the training
  pairs, so a prediction stays on the set of descriptors that some pose of the rig explains.

Validation reports :func:`~modules.adapter_metrics.adapter_metrics` per route and split as ``<route>_<split>/<measure>``
(``val/r2_rel``: the mean over the held-out splits) and keeps them in :attr:`AdapterModule.report`.
:meth:`AdapterModule.animator_with_adapter` is the product: the animator with the trained adapter in its slot
(:class:`callbacks.AnimatorExport` writes it at the end of ``fit``).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import torch
import torch.nn.functional as F
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from core.errors import NonFiniteError
from modules.adapter import LandmarkAdapter
from modules.adapter_losses import CycleMaps, info_nce
from modules.adapter_metrics import adapter_metrics
from modules.animator_checkpoint import load_animator
from modules.animator_module import AnimatorModule, non_finite_entries


class AdapterModule(LightningModule):
    """The adapter of a frozen, trained animator.

    Args:
        animator: the trained animator's checkpoint; its descriptor's vectors are the targets (it must be one an
            adapter can drive: its vector determines its motion, e.g. keypoints).
        hidden: the adapter's hidden width.
        window: frames per prediction (1: an MLP; more: a causal temporal convolution); the data's ``window``.
        dropout: on the adapter's hidden layers while training.
        contrastive: weight of the InfoNCE term.
        cycle: weight of the descriptor → parameters → descriptor term.
        optimizer: optimizer class with its settings (``configs/adapter/trainer.yaml``: AdamW, lr 1e-3, weight decay 1e-4).

    Raises:
        CheckpointError: ``animator`` is not a readable animator checkpoint.
        UserFacingError: its descriptor cannot be driven from a vector.
    """

    def __init__(self, animator: str, hidden: int = 256, window: int = 1, dropout: float = 0.1, contrastive: float = 0.1,
                 cycle: float = 0.1, optimizer: OptimizerCallable = torch.optim.AdamW) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.animator: AnimatorModule = load_animator(animator).eval().requires_grad_(False)
        dim = self.animator.descriptor.spec.vector_dim
        self.animator.descriptor.motion_from_vector(torch.zeros(1, dim))  # refuses a descriptor no adapter can drive
        self.adapter = LandmarkAdapter(dim, hidden=hidden, temporal_window=window, dropout=dropout)
        self.window, self.weights = window, {"contrastive": contrastive, "cycle": cycle}
        self._optimizer_factory = optimizer
        self._maps: CycleMaps | None = None
        self._runs: dict[tuple[str, str], list[tuple[Tensor, Tensor, Tensor]]] = defaultdict(list)
        self.report: dict[str, dict[str, float]] = {}

    @property
    def image_size(self) -> int:
        """The side the animator's descriptor reads frames at."""
        return self.animator.image_size

    @torch.no_grad()
    def target_vectors(self, frames: Tensor) -> Tensor:
        """Frames ``B×3×S×S`` in ``[0, 1]`` → the frozen descriptor's vectors ``B×D``."""
        return self.animator.describe(frames.to(self.device)).vector.cpu()

    def train(self, mode: bool = True) -> AdapterModule:
        """Train the adapter; the animator stays in eval mode."""
        super().train(mode)
        self.animator.eval()
        return self

    def setup(self, stage: str) -> None:
        """Standardise the adapter by the training pairs (``fit``; a resumed checkpoint then restores the same
        statistics)."""
        if stage == "fit":
            features, targets, _ = self.trainer.datamodule.train_windows()
            self.adapter.set_statistics(features, targets)
        self._maps = None

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._maps = None  # refitted with the restored statistics

    @property
    def cycle_maps(self) -> CycleMaps:
        """The ridge maps between standardised targets and parameters of the training pairs (fitted on first use)."""
        if self._maps is None:
            _, targets, parameters = self.trainer.datamodule.train_windows()
            self._maps = CycleMaps(self.adapter.standardise(targets.to(self.device)), parameters.to(self.device))
        return self._maps

    def forward(self, features: Tensor) -> Tensor:
        """Face features ``B×W×F`` → standardised descriptor vectors ``B×D`` for the last frame."""
        return self.adapter.standardise(self.adapter(features)[:, -1])

    def training_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> Tensor:
        features, targets, _ = batch
        predicted, target = self(features), self.adapter.standardise(targets)
        terms = {"regression": F.smooth_l1_loss(predicted, target), "contrastive": info_nce(predicted, target),
                 "cycle": self.cycle_maps.cycle_loss(predicted)}
        loss = terms["regression"] + self.weights["contrastive"] * terms["contrastive"] + self.weights["cycle"] * terms["cycle"]
        bad = non_finite_entries({**terms, "loss": loss})
        if bad:
            raise NonFiniteError(f"adapter training stopped at step {self.global_step}: loss terms {', '.join(bad)} are not finite")
        self.log_dict({f"train/{name}": value for name, value in terms.items()} | {"train/loss": loss}, batch_size=len(features))
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """``batch``: the windows of one sequence (:class:`~datamodules.adapter_datamodule.SequenceWindows`)."""
        if len(batch.features):
            self._runs[batch.route, batch.split].append((self(batch.features), self.adapter.standardise(batch.targets), batch.parameters))

    def on_validation_epoch_end(self) -> None:
        runs, self._runs = self._runs, defaultdict(list)
        if self.trainer.sanity_checking:
            return
        std = self.adapter.std
        self.report = {f"{route}/{split}": adapter_metrics(sequences, std, self.cycle_maps, route == "human")
                       for (route, split), sequences in sorted(runs.items())}
        self.report = {name: row for name, row in self.report.items() if row}
        for name, row in self.report.items():
            self.log_dict({f"{name.replace('/', '_')}/{measure}": value for measure, value in row.items()}, batch_size=1)
        held_out = [row["r2_rel"] for name, row in self.report.items() if name.endswith("/val")]
        if held_out:
            self.log("val/r2_rel", sum(held_out) / len(held_out), prog_bar=True, batch_size=1)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = non_finite_entries(checkpoint["state_dict"])
        if bad:
            raise NonFiniteError(f"not saving a checkpoint at step {self.global_step}: {len(bad)} weights are not finite (first: {bad[0]})")

    def animator_with_adapter(self) -> AnimatorModule:
        """A copy of the animator with (a copy of) the trained adapter in its ``adapter`` slot, in eval mode."""
        animator = copy.deepcopy(self.animator)
        animator.adapter = copy.deepcopy(self.adapter).eval()
        return animator.eval()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._optimizer_factory(self.adapter.parameters())
