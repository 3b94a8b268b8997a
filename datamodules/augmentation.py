"""``PairAugmentation``: one random kornia augmentation shared by every image of a (portrait, driving) pair.

Colour jitter, a small affine, a horizontal flip and (optionally) a smooth non-rigid reshaping — a thin-plate
spline, :class:`core.warps.RandomWarp`: a wider face, a longer fringe, another character's proportions — are drawn
per pair and applied alike to ``source``, ``driving``, ``target`` and ``driving_first`` where given (so the character keeps its colours and shape
and the motion between the frames is unchanged), to the region maps (nearest-neighbour) and to the keypoints.
Optionally the character's parts are recoloured independently first (``part_hue``: hair, eyes, skin, clothes each
turned by its own hue, read from the region maps) — another character's colour scheme, not only another tint.
A flip mirrors the character, so the ground truth is mirrored too: the standard parameters of flipped pairs swap left and right (``ParamEyeLOpen`` ↔
``ParamEyeROpen``, ``ParamBrowLY`` ↔ ``ParamBrowRY``) and negate the horizontal ones (``ParamAngleX``,
``ParamAngleZ``, ``ParamEyeBallX``); region labels and keypoint names swap left and right.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from kornia.color import hsv_to_rgb, rgb_to_hsv
from torch import Tensor, nn

from core.vocabulary import KEYPOINT_NAMES, PARAMETER_INDEX, REGIONS
from core.warps import RandomWarp

IMAGE_KEYS = ("source", "driving", "target", "driving_first")
PARAM_KEYS = ("source_params", "driving_params")
KEYPOINT_KEYS = ("source_keypoints", "driving_keypoints")
REGION_KEYS = ("source_regions", "driving_regions", "target_regions")
MASK_KEY = "driving_param_mask"


PART_GROUPS: tuple[tuple[str, ...], ...] = (
    ("face",), ("left_eye", "right_eye"), ("left_brow", "right_brow"), ("mouth",), ("hair",), ("body",),
)
"""The parts recoloured together by ``part_hue`` (both eyes alike, both brows alike); the background keeps its colour."""


def _part_of_region() -> list[int]:
    """For each region label, the index of its group in :data:`PART_GROUPS` plus one (0: background, unchanged)."""
    return [next((g + 1 for g, names in enumerate(PART_GROUPS) if name in names), 0) for name in REGIONS]


def _mirror_permutation(names: tuple[str, ...]) -> list[int]:
    """For each name, the index of its mirror image (``left_x`` ↔ ``right_x``, ``mouth_left`` ↔ ``mouth_right``)."""
    def mirror(name: str) -> str:
        for a, b in (("left", "right"), ("right", "left")):
            if a in name:
                return name.replace(a, b)
        return name

    return [names.index(mirror(name)) for name in names]


_NEGATED = [PARAMETER_INDEX[k] for k in ("ParamAngleX", "ParamAngleZ", "ParamEyeBallX")]
_SWAPPED = [(PARAMETER_INDEX["ParamEyeLOpen"], PARAMETER_INDEX["ParamEyeROpen"]), (PARAMETER_INDEX["ParamBrowLY"], PARAMETER_INDEX["ParamBrowRY"])]


def _swap_sides(values: Tensor) -> Tensor:
    """A copy of per-parameter values ``B×P`` with the left and right parameters exchanged."""
    swapped = values.clone()
    for a, b in _SWAPPED:
        swapped[:, [a, b]] = values[:, [b, a]]
    return swapped


class PairAugmentation(nn.Module):
    """Random augmentation of whole pairs, applied on the batch (on its device) during training only.

    Args:
        brightness, contrast, saturation, hue: colour-jitter strengths (kornia ``ColorJitter``).
        jitter_p: probability of colour jitter per pair.
        degrees: largest rotation of the affine, in degrees.
        translate: largest shift as a fraction of the image size.
        scale: largest relative zoom in or out.
        affine_p: probability of the affine per pair.
        flip_p: probability of a horizontal flip per pair.
        shape_std: strength of the reshaping: standard deviation of the spline's weights on a 5×5 grid of control
            points (0.005 moves pixels by about 2 % of the image size on average, 0.01 by about 5 %); 0: off.
        shape_p: probability of the reshaping per pair.
        part_hue: largest hue turn of each part (:data:`PART_GROUPS`), drawn independently per part and pair, as a
            fraction of the hue circle (0.5: any hue); 0: off. Needs the region maps; a pair whose target is not
            its driving frame (a cross-identity pair, whose target has no region map) keeps its colours.
        part_p: probability of the part recolouring per pair.
    """

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2, hue: float = 0.03,
                 jitter_p: float = 0.8, degrees: float = 5.0, translate: float = 0.05, scale: float = 0.05,
                 affine_p: float = 0.5, flip_p: float = 0.5, shape_std: float = 0.0, shape_p: float = 0.5,
                 part_hue: float = 0.0, part_p: float = 0.5) -> None:
        super().__init__()
        if shape_std < 0 or not 0.0 <= shape_p <= 1.0:
            raise ValueError(f"shape_std must be non-negative and shape_p in [0, 1], got {shape_std} and {shape_p}")
        if not 0.0 <= part_hue <= 0.5 or not 0.0 <= part_p <= 1.0:
            raise ValueError(f"part_hue must be in [0, 0.5] and part_p in [0, 1], got {part_hue} and {part_p}")
        self.shape_std, self.shape_p, self.part_hue, self.part_p = shape_std, shape_p, part_hue, part_p
        self.augment = K.AugmentationSequential(
            K.ColorJitter(brightness, contrast, saturation, hue, p=jitter_p),
            K.RandomAffine(degrees=degrees, translate=(translate, translate), scale=(1.0 - scale, 1.0 + scale), p=affine_p),
            K.RandomHorizontalFlip(p=flip_p),
        )
        self.register_buffer("_keypoint_mirror", torch.tensor(_mirror_permutation(KEYPOINT_NAMES)), persistent=False)
        self.register_buffer("_region_mirror", torch.tensor(_mirror_permutation(REGIONS)), persistent=False)
        self.register_buffer("_part_of_region", torch.tensor(_part_of_region()), persistent=False)

    @torch.no_grad()
    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Augment a collated batch (keys of :mod:`datamodules.puppet_datamodule`); returns a new dict."""
        out = dict(batch)
        if self.part_hue > 0:
            self._recolour_parts(out)
        names = [k for k in IMAGE_KEYS if k in out] + [k for k in KEYPOINT_KEYS if k in out]
        inputs = [out[k] for k in names]
        keys = ["input" if k in IMAGE_KEYS else "keypoints" for k in names]
        for key in REGION_KEYS:
            if key in batch:
                names.append(key)
                inputs.append(batch[key][:, None].float())
                keys.append("mask")
        results = self.augment(*inputs, data_keys=keys)
        out.update(zip(names, results))
        flipped = self.augment._params[-1].data["batch_prob"].to(torch.bool).to(batch["source"].device)
        for key in REGION_KEYS:
            if key in out:
                regions = out[key][:, 0].round().long()
                out[key] = torch.where(flipped[:, None, None], self._region_mirror[regions], regions)
        for key in KEYPOINT_KEYS:
            if key in out:
                out[key] = torch.where(flipped[:, None, None], out[key][:, self._keypoint_mirror], out[key])
        if self.shape_std > 0:
            self._reshape(out)
        for key in (*PARAM_KEYS, MASK_KEY):
            if key in out:
                mirrored = _swap_sides(out[key])
                if key != MASK_KEY:
                    mirrored[:, _NEGATED] = -mirrored[:, _NEGATED]
                out[key] = torch.where(flipped[:, None], mirrored, out[key])
        return out

    def _recolour_parts(self, out: dict[str, Tensor]) -> None:
        """Turn each part's hue by its own random angle per pair (``part_p`` of them), in place.

        The source (and ``driving_first``, the source in a self pair) is recoloured by its region map, the driving frame
        by its own and the target by ``target_regions`` (the driving frame's where the batch has none).
        """
        missing = [k for k in ("source_regions", "driving_regions") if k not in out]
        if missing:
            raise ValueError(f"PairAugmentation(part_hue={self.part_hue}) needs region maps, the batch lacks {missing}")
        source = out["source"]
        batch = source.shape[0]
        turns = (torch.rand(batch, len(PART_GROUPS) + 1, device=source.device, dtype=source.dtype) * 2 - 1) * self.part_hue
        turns[:, 0] = 0.0  # the background
        keep = torch.rand(batch, device=source.device) >= self.part_p
        if "target" in out:
            keep |= (out["target"] != out["driving"]).flatten(1).any(1)
        turns[keep] = 0.0
        angles = turns * (2 * torch.pi)
        # driving_first is the source in self pairs; cross-identity pairs (another character's frame) are kept
        by_regions = {"source": "source_regions", "driving": "driving_regions", "target": "target_regions" if "target_regions" in out else "driving_regions",
                      "driving_first": "source_regions"}
        for key, regions in by_regions.items():
            if key in out:
                turn = angles.gather(1, self._part_of_region[out[regions]].flatten(1)).view(batch, 1, *source.shape[-2:])
                hsv = rgb_to_hsv(out[key].clamp(0.0, 1.0))
                hue = torch.remainder(hsv[:, :1] + turn, 2 * torch.pi)
                out[key] = torch.where(turn != 0, hsv_to_rgb(torch.cat([hue, hsv[:, 1:]], 1)), out[key])

    def _reshape(self, out: dict[str, Tensor]) -> None:
        """Apply one random spline per pair (``shape_p`` of them; the rest get the identity) in place."""
        source = out["source"]
        batch, height, width = source.shape[0], *source.shape[-2:]
        warp = RandomWarp.sample(batch, affine_std=0.0, tps_std=self.shape_std, device=source.device, dtype=source.dtype)
        warp.kernel_weights = warp.kernel_weights * (torch.rand(batch, 1, 1, device=source.device) < self.shape_p)
        images = [k for k in IMAGE_KEYS if k in out]  # one call each for images and labels: the spline once per pixel
        for key, warped in zip(images, warp.image(torch.cat([out[k] for k in images], 1)).chunk(len(images), 1)):
            out[key] = warped
        regions = [k for k in REGION_KEYS if k in out]
        if regions:
            labels = warp.image(torch.stack([out[k] for k in regions], 1).to(source.dtype), mode="nearest").long()
            out.update(zip(regions, labels.unbind(1)))
        scale = torch.tensor([(width - 1) / 2.0, (height - 1) / 2.0], device=source.device, dtype=source.dtype)
        for key in KEYPOINT_KEYS:
            if key in out:
                out[key] = (warp.inverse_points(out[key] / scale - 1.0) + 1.0) * scale
