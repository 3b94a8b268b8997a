"""PairAugmentation: shared random transforms for a pair, and ground truth mirrored with the image."""

from pathlib import Path

import torch

from conftest import metric_by_step, run_cli, tiny_args
from core.vocabulary import KEYPOINT_NAMES, PARAMETER_INDEX, REGIONS
from datamodules import PuppetPairs
from datamodules.augmentation import PairAugmentation


def batch(size: int = 48):
    pairs = PuppetPairs(list(range(6)), length=4, image_size=size, seed=1)
    return torch.utils.data.default_collate([pairs[i] for i in range(4)])


def test_a_flip_mirrors_images_regions_keypoints_and_parameters():
    original = batch()
    flipped = PairAugmentation(jitter_p=0.0, affine_p=0.0, flip_p=1.0)(original)
    assert torch.equal(flipped["source"], original["source"].flip(-1))
    assert torch.equal(flipped["driving"], original["driving"].flip(-1))
    left, right = REGIONS.index("left_eye"), REGIONS.index("right_eye")
    assert torch.equal((flipped["driving_regions"] == left).sum((1, 2)), (original["driving_regions"] == right).sum((1, 2)))
    expected_regions = original["driving_regions"].flip(-1)
    swapped = expected_regions.clone()
    swapped[expected_regions == left], swapped[expected_regions == right] = right, left
    assert (flipped["driving_regions"] == swapped).float().mean() > 0.99
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


def test_training_with_augmentation_through_the_cli(tmp_path):
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=["--data.init_args.augmentation=datamodules.augmentation.PairAugmentation"]))
    assert isinstance(cli.datamodule.augmentation, PairAugmentation)
    assert len(metric_by_step(Path(cli.trainer.log_dir), "train/loss")) == 2
