"""PairAugmentation: shared random transforms for a pair, and ground truth mirrored with the image."""

from pathlib import Path

import pytest
import torch
from kornia.color import rgb_to_hsv
from kornia.geometry.subpix import spatial_expectation2d

from conftest import metric_by_step, run_cli, tiny_args
from core.vocabulary import KEYPOINT_NAMES, PARAMETER_INDEX, REGIONS
from datamodules import PuppetPairs
from datamodules.augmentation import PairAugmentation


def batch(size: int = 48):
    pairs = PuppetPairs(list(range(6)), length=4, image_size=size, seed=1)
    return torch.utils.data.default_collate([pairs[i] for i in range(4)])


def test_a_flip_mirrors_images_regions_keypoints_and_parameters():
    original = batch()
    original["target_regions"] = original["source_regions"]  # a cross-identity pair's target has its own map
    flipped = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=1.0)(original)
    assert torch.equal(flipped["source"], original["source"].flip(-1))
    assert torch.equal(flipped["driving"], original["driving"].flip(-1))
    left, right = REGIONS.index("left_eye"), REGIONS.index("right_eye")
    assert torch.equal((flipped["driving_regions"] == left).sum((1, 2)), (original["driving_regions"] == right).sum((1, 2)))
    expected_regions = original["driving_regions"].flip(-1)
    swapped = expected_regions.clone()
    swapped[expected_regions == left], swapped[expected_regions == right] = right, left
    assert (flipped["driving_regions"] == swapped).float().mean() > 0.99
    assert torch.equal((flipped["target_regions"] == left).sum((1, 2)), (original["source_regions"] == right).sum((1, 2)))
    kp_left, kp_right = KEYPOINT_NAMES.index("left_eye"), KEYPOINT_NAMES.index("right_eye")
    width = original["source"].shape[-1]
    mirrored_x = width - 1 - original["driving_keypoints"][:, kp_right, 0]
    assert torch.allclose(flipped["driving_keypoints"][:, kp_left, 0], mirrored_x, atol=1.0)
    p, q = original["driving_params"], flipped["driving_params"]
    assert torch.equal(q[:, PARAMETER_INDEX["ParamAngleX"]], -p[:, PARAMETER_INDEX["ParamAngleX"]])
    assert torch.equal(q[:, PARAMETER_INDEX["ParamEyeLOpen"]], p[:, PARAMETER_INDEX["ParamEyeROpen"]])
    assert torch.equal(q[:, PARAMETER_INDEX["ParamMouthOpenY"]], p[:, PARAMETER_INDEX["ParamMouthOpenY"]])


def test_no_flip_leaves_ground_truth_alone_and_a_pair_shares_its_colours():
    original = batch()
    original["driving"] = original["source"].clone()
    out = PairAugmentation(jitter_p=1.0, affine_p=1.0, flip_p=0.0)(original)
    assert torch.equal(out["source_params"], original["source_params"])
    assert not torch.allclose(out["source"], original["source"])
    assert torch.allclose(out["source"], out["driving"]), "portrait and driving frame get the same transform"


def test_reshaping_moves_images_regions_and_keypoints_together():
    original = batch(64)
    blob_at = torch.tensor([[20.0, 30.0], [40.0, 25.0], [32.0, 44.0], [25.0, 18.0]])
    ys, xs = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    blob = torch.exp(-((xs - blob_at[:, 0, None, None]) ** 2 + (ys - blob_at[:, 1, None, None]) ** 2) / (2 * 4.0**2))
    original["target"] = blob[:, None].expand(-1, 3, -1, -1).contiguous()
    original["driving"] = original["source"].clone()
    original["source_regions"] = torch.where(blob > 0.5, REGIONS.index("face"), REGIONS.index("background"))
    original["driving_keypoints"][:, 0] = blob_at
    torch.manual_seed(0)
    out = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=0.0, shape_std=0.01, shape_p=1.0)(original)
    moved = (out["source"] - original["source"]).abs().mean((1, 2, 3))
    assert (moved > 0.005).all(), "every pair is reshaped"
    assert torch.equal(out["source"], out["driving"]), "portrait and driving frame get the same shape"
    weights = out["target"][:, :1] ** 4  # the blob's peak, so that border pixels do not pull its centre
    found = spatial_expectation2d(weights / weights.sum((-2, -1), keepdim=True), normalized_coordinates=False)[:, 0]
    assert (found - blob_at).norm(dim=-1).max() > 1.0, "the warp moved the blobs"
    assert torch.allclose(out["driving_keypoints"][:, 0], found, atol=0.3), "keypoints move with the image"
    inside = out["target"][:, 0] > 0.5
    assert ((out["source_regions"] == REGIONS.index("face")) == inside).float().mean() > 0.99, "regions move with the image"
    assert not torch.equal(out["source_regions"], original["source_regions"])
    kept = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=0.0, shape_std=0.01, shape_p=0.0)(original)
    assert torch.allclose(kept["source"], original["source"], atol=1e-5) and torch.equal(kept["source_regions"], original["source_regions"])


def hue_turn(after: torch.Tensor, before: torch.Tensor, where: torch.Tensor) -> float:
    """The median hue turn from ``before`` to ``after`` (3, H, W) over the saturated pixels of ``where`` (H, W), in turns."""
    h1, s1 = rgb_to_hsv(before)[:2]
    h2 = rgb_to_hsv(after)[0]
    turn = torch.remainder(h2 - h1, 2 * torch.pi) / (2 * torch.pi)
    return turn[where & (s1 > 0.2)].median().item()


def test_part_recolouring_turns_each_part_by_its_own_hue_and_keeps_pairs_and_background():
    original = batch()
    original["driving"], original["driving_regions"] = original["source"].clone(), original["source_regions"].clone()
    original["target"] = original["driving"].clone()
    original["target"][3] = original["source"][0]  # a cross-identity pair: its target is another frame
    torch.manual_seed(0)
    out = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=0.0, part_hue=0.5, part_p=1.0)(original)
    regions = original["source_regions"]
    background = regions == REGIONS.index("background")
    assert torch.equal(out["source"].permute(1, 0, 2, 3)[:, background], original["source"].permute(1, 0, 2, 3)[:, background])
    assert torch.allclose(out["source"][:3], out["driving"][:3], atol=1e-5), "portrait and driving frame share the colours"
    assert torch.allclose(out["target"][:3], out["driving"][:3], atol=1e-5)
    assert torch.equal(out["source"][3], original["source"][3]), "a cross-identity pair keeps its colours"
    original["driving_first"] = original["source"].clone()  # the source in self pairs (cross-identity training)
    torch.manual_seed(0)
    with_first = PairAugmentation(jitter_p=1.0, affine_p=1.0, flip_p=0.5, part_hue=0.5, part_p=1.0)(original)
    assert torch.allclose(with_first["driving_first"], with_first["source"], atol=1e-5), "driving_first is transformed as the source"
    for i in range(3):
        turns = [hue_turn(out["source"][i], original["source"][i], regions[i] == REGIONS.index(name)) for name in ("hair", "face", "body")]
        assert len({round(t, 2) for t in turns}) == 3, f"pair {i}: hair, face and body get their own hue turns, got {turns}"
    kept = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=0.0, part_hue=0.5, part_p=0.0)(original)
    assert torch.equal(kept["source"], original["source"])


def test_part_recolouring_needs_region_maps_and_a_hue_within_half_a_turn():
    original = batch()
    del original["driving_regions"]
    with pytest.raises(ValueError, match="needs region maps.*driving_regions"):
        PairAugmentation(part_hue=0.2)(original)
    with pytest.raises(ValueError, match="part_hue must be in"):
        PairAugmentation(part_hue=0.7)


def test_training_with_augmentation_through_the_cli(tmp_path):
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=["--data.init_args.augmentation=datamodules.augmentation.PairAugmentation"]))
    assert isinstance(cli.datamodule.augmentation, PairAugmentation)
    assert len(metric_by_step(Path(cli.trainer.log_dir), "train/loss")) == 2
