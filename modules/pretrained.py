"""Creating timm models with pretrained weights from a local file or timm's normal hub path, and loading
trained descriptors from checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from core.errors import PretrainedWeightsError


def create_pretrained_timm_model(name: str, pretrained: bool, weights_path: str | None, **kwargs: Any) -> nn.Module:
    """``timm.create_model`` with weights that are either local, fetched through timm, or random.

    Args:
        name: a timm model name, e.g. ``vit_small_patch14_dinov2.lvd142m``.
        pretrained: load pretrained weights; ``False`` gives random initialisation (for smoke tests).
        weights_path: a local weights file (``.pth``, ``.bin`` or ``.safetensors`` state dict). When given it is
            used through timm's own pretrained loader, so position embeddings are resized like a hub download.
        **kwargs: passed to ``timm.create_model`` (``img_size``, ``num_classes``, ...).

    Raises:
        PretrainedWeightsError: the name is unknown, the file is missing, or the hub cannot be reached and no
            file was given; the message names both ways to provide weights.
    """
    if not timm.is_model(name):
        raise PretrainedWeightsError(f"unknown timm model {name!r} (see timm.list_models())")
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"weights file {str(path)!r} for {name} does not exist")
        try:
            return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **kwargs)
        except (RuntimeError, OSError, ValueError, KeyError) as exc:
            raise PretrainedWeightsError(f"weights file {str(path)!r} does not fit {name}: {exc}") from exc
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as exc:  # any failure to fetch: offline, blocked host, missing cache entry
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PretrainedWeightsError(
            f"pretrained weights for {name} could not be loaded through timm's hub path ({reason}).\n"
            f"Either go online once (timm downloads and caches them), or download the weights file and pass it "
            f"with weights_path (e.g. --model.descriptor.init_args.weights_path=/path/to/model.safetensors).\n"
            f"For a smoke test without weights use --model.descriptor.init_args.pretrained=false."
        ) from exc


def load_descriptor_weights(descriptor: nn.Module, path: str) -> None:
    """Load ``descriptor``'s weights from ``path``: an AnimatorModule checkpoint (its ``descriptor.`` entries) or
    a plain state dict of the descriptor.

    Raises:
        PretrainedWeightsError: the file is missing or unreadable, or its weights do not fit (names the keys).
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise PretrainedWeightsError(f"descriptor checkpoint {str(file)!r} does not exist")
    try:
        content = torch.load(file, map_location="cpu", weights_only=True)  # checkpoints are plain data; nothing in them runs
    except Exception as exc:
        raise PretrainedWeightsError(f"descriptor checkpoint {str(file)!r} is not readable: {exc}") from exc
    state = content.get("state_dict", content) if isinstance(content, dict) else None
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{str(file)!r} holds no state dict")
    if any(key.startswith("descriptor.") for key in state):
        state = {key.removeprefix("descriptor."): value for key, value in state.items() if key.startswith("descriptor.")}
    try:
        descriptor.load_state_dict(state)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:400]
        raise PretrainedWeightsError(
            f"{str(file)!r} does not fit this descriptor (same class and settings as when it was trained?): {reason}"
        ) from exc


class InputNormalisation(nn.Module):
    """Frames ``B×3×H×W`` in ``[0, 1]`` → the mean/std normalisation a pretrained network expects.

    Args:
        mean, std: per-channel statistics (ImageNet's by default).
    """

    def __init__(self, mean: tuple[float, ...] = (0.485, 0.456, 0.406), std: tuple[float, ...] = (0.229, 0.224, 0.225)) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @classmethod
    def for_model(cls, model: nn.Module) -> InputNormalisation:
        """The statistics in a timm model's ``pretrained_cfg`` (ImageNet's where it names none)."""
        config = getattr(model, "pretrained_cfg", {}) or {}
        return cls(tuple(config.get("mean", (0.485, 0.456, 0.406))), tuple(config.get("std", (0.229, 0.224, 0.225))))

    def forward(self, frames: Tensor) -> Tensor:
        return (frames - self.mean) / self.std
