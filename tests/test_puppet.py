"""The procedural puppet: determinism, ground truth that follows the parameters, and pair sampling."""

import numpy as np
import pytest
import torch

from core.vocabulary import KEYPOINT_NAMES, PARAMETER_NAMES, REGIONS, default_parameters, parameters_from_mapping, parameters_in_unit_interval
from datamodules import PuppetDataModule, PuppetPairs
from datamodules.puppet import PuppetIdentity, render_puppet, sample_parameters


def pose(**values: float) -> np.ndarray:
    return parameters_from_mapping(values)


def area(frame, region: str) -> int:
    return int((frame.regions == REGIONS.index(region)).sum())


def keypoint(frame, name: str) -> np.ndarray:
    return frame.keypoints[KEYPOINT_NAMES.index(name)]


@pytest.fixture(scope="module")
def identity() -> PuppetIdentity:
    return PuppetIdentity.from_seed(3)


def test_same_seed_same_pixels_and_different_seeds_differ(identity):
    params = sample_parameters(np.random.default_rng(1))
    a = render_puppet(identity, params, 96)
    b = render_puppet(PuppetIdentity.from_seed(3), params, 96)
    c = render_puppet(PuppetIdentity.from_seed(4), params, 96)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.regions, b.regions)
    assert np.abs(a.image.astype(int) - c.image.astype(int)).mean() > 5


@pytest.mark.parametrize("size", [16, 48, 200])
def test_any_size_gives_consistent_shapes(identity, size):
    frame = render_puppet(identity, default_parameters(), size)
    assert frame.image.shape == (size, size, 3) and frame.image.dtype == np.uint8
    assert frame.regions.shape == (size, size) and frame.regions.max() < len(REGIONS)
    assert frame.keypoints.shape == (len(KEYPOINT_NAMES), 2)
    assert (frame.keypoints >= 0).all() and (frame.keypoints < size).all()


def test_closing_left_eye_removes_its_sclera_on_the_image_right(identity):
    open_ = render_puppet(identity, pose(ParamEyeLOpen=1.0), 128)
    closed = render_puppet(identity, pose(ParamEyeLOpen=0.0), 128)
    assert area(closed, "left_eye") < 0.4 * area(open_, "left_eye")
    assert area(closed, "right_eye") == area(open_, "right_eye")
    assert keypoint(open_, "left_eye")[0] > 64 > keypoint(open_, "right_eye")[0]  # character's left = image right


def test_head_yaw_moves_the_face_right_and_pitch_moves_it_up(identity):
    neutral = render_puppet(identity, default_parameters(), 128)
    right = render_puppet(identity, pose(ParamAngleX=30.0), 128)
    up = render_puppet(identity, pose(ParamAngleY=30.0), 128)
    assert keypoint(right, "nose")[0] - keypoint(neutral, "nose")[0] > 3
    assert keypoint(neutral, "nose")[1] - keypoint(up, "nose")[1] > 3


def test_mouth_gaze_and_brows_follow_their_parameters(identity):
    closed = render_puppet(identity, pose(ParamMouthOpenY=0.0), 128)
    opened = render_puppet(identity, pose(ParamMouthOpenY=1.0), 128)
    assert area(opened, "mouth") > 3 * area(closed, "mouth")
    look_left = render_puppet(identity, pose(ParamEyeBallX=-1.0), 128)
    look_right = render_puppet(identity, pose(ParamEyeBallX=1.0), 128)
    assert keypoint(look_right, "left_iris")[0] - keypoint(look_left, "left_iris")[0] > 2
    low = render_puppet(identity, pose(ParamBrowLY=-1.0), 128)
    high = render_puppet(identity, pose(ParamBrowLY=1.0), 128)
    assert keypoint(low, "left_brow")[1] - keypoint(high, "left_brow")[1] > 3
    assert keypoint(low, "right_brow")[1] == pytest.approx(keypoint(high, "right_brow")[1])


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="expected 11 parameters"):
        render_puppet(PuppetIdentity.from_seed(0), np.zeros(3), 64)
    with pytest.raises(KeyError, match="ParamNose"):
        parameters_from_mapping({"ParamNose": 1.0})
    with pytest.raises(ValueError, match="ParamEyeLOpen=2.0 is outside"):
        parameters_from_mapping({"ParamEyeLOpen": 2.0})
    assert parameters_in_unit_interval(default_parameters())[PARAMETER_NAMES.index("ParamAngleX")] == pytest.approx(0.5)


def test_self_pairs_share_identity_and_are_deterministic():
    pairs = PuppetPairs(list(range(10)), length=20, image_size=64, seed=5, mode="self")
    a, b = pairs[7], pairs[7]
    assert a["identity"] == a["driving_identity"]
    assert torch.equal(a["source"], b["source"]) and torch.equal(a["driving"], b["driving"])
    assert torch.equal(a["target"], a["driving"])
    assert not torch.equal(a["source_params"], a["driving_params"])
    assert a["source"].shape == (3, 64, 64) and 0.0 <= a["source"].min() and a["source"].max() <= 1.0


def test_cross_pairs_give_the_source_character_in_the_driving_pose():
    pairs = PuppetPairs([100, 101, 102], length=5, image_size=64, seed=0, mode="cross")
    item = pairs[2]
    assert item["identity"] != item["driving_identity"]
    expected = render_puppet(PuppetIdentity.from_seed(int(item["identity"])), item["driving_params"].numpy(), 64)
    assert torch.equal(item["target"], torch.from_numpy(expected.image).permute(2, 0, 1).float() / 255)
    assert torch.equal(item["source_params"], torch.from_numpy(default_parameters()))


def test_datamodule_splits_characters_and_batches_with_workers():
    dm = PuppetDataModule(image_size=32, batch_size=4, num_workers=2, train_identities=20, held_out_identities=4, train_pairs=16, val_pairs=8)
    assert not set(dm.train_set.identities) & set(dm.val_set.identities)
    batch = next(iter(dm.train_dataloader()))
    assert batch["source"].shape == (4, 3, 32, 32) and batch["driving_regions"].shape == (4, 32, 32)
    assert batch["driving_keypoints"].shape == (4, len(KEYPOINT_NAMES), 2)
    val_a = next(iter(dm.val_dataloader()))
    val_b = next(iter(dm.val_dataloader()))
    assert torch.equal(val_a["driving"], val_b["driving"])
