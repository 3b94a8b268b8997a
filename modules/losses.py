"""Loss terms of the animator: functional forms (shapes and ranges in each docstring) and their weights.

All images are ``B×C×H×W`` in ``[0, 1]``; every function returns a scalar averaged over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from kornia.filters import gaussian_blur2d
from kornia.geometry.transform import build_pyramid
from kornia.losses import total_variation
from torch import Tensor, nn

from core.errors import PretrainedWeightsError
from core.vocabulary import REGIONS
from modules.descriptors.base import Motion
from modules.pretrained import InputNormalisation

MotionLossKind = Literal["descriptor_delta", "rgb_residual"]


@dataclass(frozen=True)
class LossWeights:
    """Weight of each loss term; a term with weight 0 is not computed.

    Attributes:
        reconstruction: error between prediction and driving frame (the primary term; smooth-L1 or L1, see
            ``AnimatorModule.reconstruction_beta``).
        identity: the same error between the source driven by its own motion and the source.
        tv: total variation of the predicted residual (prediction − source).
        motion: motion loss (see ``AnimatorModule.motion_loss``).
        perceptual: VGG feature loss; needs ``perceptual_weights``.
        expression: the reconstruction error over the eye, brow and mouth pixels only (:func:`region_error`,
            regions of the source and the driving frame), so the few pixels that carry expression are not drowned
            by the static ones; computed where the batch has region maps.
    """

    reconstruction: float = 1.0
    identity: float = 0.5
    tv: float = 0.01
    motion: float = 0.1
    perceptual: float = 0.0
    expression: float = 0.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"loss weight {name} must be non-negative, got {value}")


def region_mask(regions: Tensor, names: tuple[str, ...]) -> Tensor:
    """``B×1×H×W`` float mask, 1 where a region map ``B×H×W`` (int labels, :data:`~core.vocabulary.REGIONS`)
    has one of ``names``."""
    wanted = torch.tensor([REGIONS.index(n) for n in names], device=regions.device)
    return torch.isin(regions, wanted)[:, None].float()


def pixel_error(prediction: Tensor, target: Tensor, beta: float = 0.0) -> Tensor:
    """Element-wise error: ``|p − t|`` for ``beta`` 0, else smooth-L1 (``(p − t)² / 2β`` below ``beta``, ``|p − t| − β/2``
    above; images in ``[0, 1]``).

    Plain L1 trains animators into copies of the portrait: its gradient has full strength for the tiniest
    deviation, so the many pixels that should stay exactly as they are outvote the few that should change (an
    eye closing, a mouth opening). The quadratic zone gives small deviations small gradients.
    """
    if beta <= 0:
        return (prediction - target).abs()
    return F.smooth_l1_loss(prediction, target, reduction="none", beta=beta)


def pyramid_error(prediction: Tensor, target: Tensor, scales: int = 1, beta: float = 0.0) -> Tensor:
    """:func:`pixel_error` averaged over a Gaussian image pyramid of ``scales`` levels (full size, ½, ¼, …; kornia's
    ``build_pyramid``), each level's mean counting alike — FOMM's multi-scale reconstruction, with plain pixels
    in place of VGG features. ``scales`` 1 is the mean pixel error.

    At full size a misplaced warp is only told about the few pixels it misses; at coarser levels the error of a
    displacement spreads over more of the blurred image, so motion that is far off still gets a gradient.

    Args:
        prediction, target: ``B×C×H×W`` in ``[0, 1]``.
        scales: pyramid levels, ≥ 1; the coarsest is ``H / 2**(scales-1)`` pixels high.
        beta: as for :func:`pixel_error`.
    """
    if scales < 1:
        raise ValueError(f"scales must be at least 1, got {scales}")
    if scales == 1:
        return pixel_error(prediction, target, beta).mean()
    levels = zip(build_pyramid(prediction, scales - 1), build_pyramid(target, scales - 1))
    return torch.stack([pixel_error(p, t, beta).mean() for p, t in levels]).mean()


def region_error(prediction: Tensor, target: Tensor, mask: Tensor, beta: float = 0.0, reduction: Literal["mean", "none"] = "mean") -> Tensor:
    """:func:`pixel_error` averaged over the pixels of ``mask`` ``B×1×H×W`` (``beta`` 0: the mean absolute error).

    Returns:
        ``"none"``: each image's mean ``B`` (NaN where its mask is empty); ``"mean"``: their average over the
        images whose mask is not empty (0, with the graph kept, when every mask is empty).
    """
    pixels = mask.sum(dim=(1, 2, 3))
    per_image = (pixel_error(prediction, target, beta) * mask).sum(dim=(1, 2, 3)) / (pixels * prediction.shape[1]).clamp_min(1.0)
    present = pixels > 0
    if reduction == "none":
        return torch.where(present, per_image, torch.full_like(per_image, float("nan")))
    return per_image[present].mean() if present.any() else per_image.sum() * 0.0


def residual_tv_loss(prediction: Tensor, source: Tensor) -> Tensor:
    """Mean absolute total variation per pixel of the residual ``prediction − source``."""
    return total_variation(prediction - source, reduction="mean").mean()


def descriptor_delta_loss(predicted: Motion, driving: Motion, source: Motion) -> Tensor:
    """Mean squared error between motion deltas: ``(pred − src)`` against ``(drv − src)`` on descriptor vectors.

    ``driving`` and ``source`` are targets (detached); gradients reach the prediction through ``predicted``.
    """
    src = source.vector.detach()
    return F.mse_loss(predicted.vector - src, driving.vector.detach() - src)


def rgb_residual_motion_loss(prediction: Tensor, driving: Tensor, source: Tensor, sigma: float) -> Tensor:
    """The older motion loss: L1 between Gaussian-blurred RGB residuals ``pred − src`` and ``drv − src``."""
    kernel = 2 * int(3 * sigma) + 1
    blur = lambda x: gaussian_blur2d(x, (kernel, kernel), (sigma, sigma))  # noqa: E731
    return F.l1_loss(blur(prediction - source), blur(driving - source))


class PerceptualLoss(nn.Module):
    """L1 between shallow VGG-16 features (relu1_2 and relu2_2) of prediction and target.

    Args:
        weights_path: torchvision VGG-16 state dict (``vgg16-397923af.pth`` from torchvision's model zoo or any
            file with ``features.N.weight``/``features.N.bias`` keys for the first two blocks).

    Raises:
        PretrainedWeightsError: the file is missing or lacks the needed keys.
    """

    _LAYERS = 9  # conv1_1 … relu2_2 of torchvision's VGG-16 'features'
    _TAPS = (3, 8)

    def __init__(self, weights_path: str) -> None:
        super().__init__()
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"perceptual loss weights {str(path)!r} do not exist (a torchvision VGG-16 state dict)")
        features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["D"])[: self._LAYERS]
        state = torch.load(path, map_location="cpu", weights_only=True)
        wanted = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        missing = [k for k in features.state_dict() if k not in wanted]
        if missing:
            raise PretrainedWeightsError(f"perceptual loss weights {str(path)!r} lack VGG-16 keys: features.{', features.'.join(missing)}")
        features.load_state_dict({k: wanted[k] for k in features.state_dict()})
        self.features = features.eval().requires_grad_(False)
        self.normalise = InputNormalisation()

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.features.eval()
        return self

    def forward(self, prediction: Tensor, target: Tensor) -> Tensor:
        x = self.normalise(torch.cat([prediction, target]))
        loss = x.new_zeros(())
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self._TAPS:
                pred, tgt = x.chunk(2)
                loss = loss + F.l1_loss(pred, tgt)
        return loss
