"""``EvaluatorModule``: the small networks that score animations of anime faces, where human-face detectors fail.

One timm encoder with three heads, trained on rendered ground truth of **training characters only**:

* an **anime keypoint detector** — heatmaps → soft-argmax → the data's 12 keypoints (for AKD-anime);
* a **parameter regressor** — image → the standard rig parameters, normalised to each one's range (for APE);
* an **identity encoder** — an L2-normalised embedding trained contrastively (frames of one character are
  positives, others negatives; for AED-anime).

Trained by ``python -m lightning_app.train_evaluator --config configs/eval/evaluator.yaml``; its checkpoint is
given to the evaluation callback by path. Validation (held-out characters) measures its own error on real frames:
the noise floor of the metrics it serves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.subpix import spatial_expectation2d, spatial_softmax2d
from lightning import LightningModule
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from core.vocabulary import KEYPOINT_NAMES, PARAMETER_NAMES, default_parameters, parameter_bounds
from modules.pretrained import InputNormalisation, create_pretrained_timm_model


def supervised_contrastive_loss(embeddings: Tensor, labels: Tensor, temperature: float) -> Tensor:
    """InfoNCE with every same-label item as a positive (SupCon): ``embeddings`` ``N×E`` (L2-normalised),
    ``labels`` ``N``. Items without a positive are left out."""
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_prob = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    counts = positives.sum(1)
    keep = counts > 0
    return -((log_prob * positives).sum(1)[keep] / counts[keep]).mean()


class EvaluatorModule(LightningModule):
    """Keypoint detector, parameter regressor and identity encoder on one small timm encoder.

    Args:
        encoder: timm model name with ``features_only`` support.
        pretrained: start from pretrained encoder weights (hub or ``weights_path``).
        weights_path: local encoder weights file.
        input_size: frames are resized to ``input_size²`` (a multiple of 32).
        embed_dim: identity embedding size.
        temperature: of the contrastive loss.
        keypoint_weight, parameter_weight, identity_weight: loss weights.
        optimizer: optimizer class with its settings.
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        pretrained: bool = False,
        weights_path: str | None = None,
        input_size: int = 128,
        embed_dim: int = 64,
        temperature: float = 0.1,
        keypoint_weight: float = 1.0,
        parameter_weight: float = 1.0,
        identity_weight: float = 0.2,
        optimizer: OptimizerCallable = torch.optim.AdamW,
    ) -> None:
        super().__init__()
        if input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {input_size}")
        self.save_hyperparameters()
        self.input_size, self.temperature = input_size, temperature
        self.weights = {"keypoints": keypoint_weight, "parameters": parameter_weight, "identity": identity_weight}
        self.encoder = create_pretrained_timm_model(encoder, pretrained, weights_path, features_only=True, out_indices=(2, 4))
        mid, deep = self.encoder.feature_info.channels()
        self.heatmaps = nn.Sequential(nn.Conv2d(mid, mid, 3, padding=1), nn.SiLU(), nn.Conv2d(mid, len(KEYPOINT_NAMES), 1))
        self.parameter_head = nn.Sequential(nn.Linear(deep, 256), nn.SiLU(), nn.Linear(256, len(PARAMETER_NAMES)))
        self.identity_head = nn.Sequential(nn.Linear(deep, 256), nn.SiLU(), nn.Linear(256, embed_dim))
        low, high = parameter_bounds()
        self.register_buffer("param_low", torch.as_tensor(low), persistent=False)
        self.register_buffer("param_span", torch.as_tensor(high - low).clamp_min(1e-6), persistent=False)
        self.register_buffer("param_default", torch.as_tensor(default_parameters()), persistent=False)
        self.normalise = InputNormalisation.for_model(self.encoder)
        self._optimizer_factory = optimizer

    def parameters_from_default(self, params: Tensor) -> Tensor:
        """Raw standard parameters ``B×P`` → units of each parameter's range, 0 at its default."""
        return (params - self.param_default) / self.param_span

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        """For frames ``B×3×H×W`` in ``[0, 1]``: ``keypoints`` ``B×K×2`` in pixels of the input frames,
        ``parameters`` ``B×P`` in units of each range from the default (see :meth:`parameters_from_default`), ``identity`` ``B×E`` unit vectors."""
        size = frames.shape[-1]
        x = F.interpolate(frames, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        mid, deep = self.encoder(self.normalise(x))
        heat = spatial_softmax2d(self.heatmaps(mid), temperature=torch.tensor(1.0))
        keypoints = (spatial_expectation2d(heat, normalized_coordinates=True) + 1.0) / 2.0 * (size - 1)
        pooled = deep.mean(dim=(-2, -1))
        return {"keypoints": keypoints, "parameters": self.parameter_head(pooled), "identity": F.normalize(self.identity_head(pooled), dim=1)}

    def _frames(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        frames = torch.cat([batch["source"], batch["driving"]])
        keypoints = torch.cat([batch["source_keypoints"], batch["driving_keypoints"]])
        params = torch.cat([batch["source_params"], batch["driving_params"]])
        identities = torch.cat([batch["identity"], batch["driving_identity"]])
        return frames, keypoints, params, identities

    def losses(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        frames, keypoints, params, identities = self._frames(batch)
        out = self(frames)
        size = frames.shape[-1]
        target = self.parameters_from_default(params)
        known = ~target.isnan()
        return {
            "keypoints": F.smooth_l1_loss(out["keypoints"] / size, keypoints / size, beta=0.01),
            "parameters": F.smooth_l1_loss(out["parameters"][known], target[known], beta=0.05),
            "identity": supervised_contrastive_loss(out["identity"], identities, self.temperature),
        }

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        terms = self.losses(batch)
        total = sum(self.weights[name] * value for name, value in terms.items())
        self.log_dict({f"train/{name}": value.detach() for name, value in terms.items()}, batch_size=batch["source"].shape[0])
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=batch["source"].shape[0])
        return total

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Errors on held-out characters' real frames: the noise floors of AKD (pixels), APE (range units) and
        the identity embedding's same-vs-other cosine gap."""
        frames, keypoints, params, identities = self._frames(batch)
        out = self(frames)
        target = self.parameters_from_default(params)
        known = ~target.isnan()
        same = (identities[:, None] == identities[None, :]).float() - torch.eye(len(identities), device=frames.device)
        cosine = out["identity"] @ out["identity"].T
        other = 1.0 - (identities[:, None] == identities[None, :]).float()
        gap = (cosine * same).sum() / same.sum().clamp_min(1) - (cosine * other).sum() / other.sum().clamp_min(1)
        self.log_dict({
            "val/akd_px": (out["keypoints"] - keypoints).norm(dim=-1).mean(),
            "val/ape": (out["parameters"][known] - target[known]).abs().mean(),
            "val/identity_gap": gap,
        }, prog_bar=True, batch_size=batch["source"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self._optimizer_factory(self.parameters())
