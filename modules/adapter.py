"""``LandmarkAdapter``: MediaPipe face features → the canonical descriptor space of a frozen descriptor.

A human's (or any face's) normalised Face Mesh landmarks, blendshapes and head pose
(:func:`datamodules.face_landmarks.landmark_features`) are mapped to the descriptor vector that the animator's
descriptor would give a Live2D frame in the same pose, so a human video drives an anime portrait through the
trained animator. It sits in the AnimatorModule's ``adapter`` slot. Relative driving (the change since the first
frame) is the calibration: a user's resting face then maps to the portrait's own pose.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.vocabulary import FEATURE_DIM


class LandmarkAdapter(nn.Module):
    """A small MLP, or with ``temporal_window > 1`` a causal 1-D convolution over the last frames then the MLP.

    Args:
        output_dim: the descriptor's vector size ``D``.
        input_dim: face feature size (MediaPipe: 478·3 landmarks + 52 blendshapes + 3 angles).
        hidden: hidden width.
        temporal_window: frames seen per output (1: frame by frame).
        dropout: dropout on the hidden layers while training.

    ``forward``: features ``B×T×F`` → descriptor vectors ``B×T×D`` (output t sees frames ``t−window+1 … t``).
    Inputs and outputs are standardised per entry with statistics of the training pairs (:meth:`set_statistics`):
    the input so that small-range signals (head roll, a blink's few landmark offsets) weigh as much as large ones,
    the output so every descriptor entry is learnt alike (``mean``/``std`` undo it; :meth:`standardise` applies it).
    """

    def __init__(self, output_dim: int, input_dim: int = FEATURE_DIM, hidden: int = 256, temporal_window: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if temporal_window < 1:
            raise ValueError(f"temporal_window must be at least 1, got {temporal_window}")
        self.temporal_window = temporal_window
        self.input = nn.Conv1d(input_dim, hidden, temporal_window)
        self.body = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, output_dim))
        self.register_buffer("input_mean", torch.zeros(input_dim))
        self.register_buffer("input_std", torch.ones(input_dim))
        self.register_buffer("mean", torch.zeros(output_dim))
        self.register_buffer("std", torch.ones(output_dim))

    def config(self) -> dict:
        """This adapter as plain data (``class_path``/``init_args``), read off its layers, for checkpoints that load
        with ``torch.load(weights_only=True)``."""
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}",
                "init_args": {"output_dim": self.body[-1].out_features, "input_dim": self.input.in_channels,
                              "hidden": self.input.out_channels, "temporal_window": self.temporal_window,
                              "dropout": self.body[1].p}}

    @torch.no_grad()
    def set_statistics(self, features: Tensor, targets: Tensor) -> None:
        """Standardisation from training pairs: features ``N×…×F``, descriptor vectors ``N×D``."""
        flat = features.reshape(-1, features.shape[-1])
        self.input_mean.copy_(flat.mean(0))
        self.input_std.copy_(flat.std(0).clamp_min(1e-3))
        self.mean.copy_(targets.mean(0))
        self.std.copy_(targets.std(0).clamp_min(1e-4))

    def forward(self, features: Tensor) -> Tensor:
        features = (features - self.input_mean) / self.input_std
        x = F.pad(features.transpose(1, 2), (self.temporal_window - 1, 0), mode="replicate")  # causal: repeat the first frame
        hidden = self.input(x).transpose(1, 2)
        return self.body(hidden) * self.std + self.mean

    def standardise(self, vectors: Tensor) -> Tensor:
        """Descriptor vectors ``…×D`` in the units the network predicts (zero mean, unit spread per entry)."""
        return (vectors - self.mean) / self.std
