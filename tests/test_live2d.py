"""Live2D rendering of the shared Cubism sample models (skipped with a reason where they are absent)."""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.frames import composite
from core.vocabulary import KEYPOINT_NAMES, REGIONS, default_parameters, parameters_from_mapping
from datamodules.live2d.moc import Drawable
from datamodules.live2d.model_files import Live2DModelError, find_setting_files, read_model_files
from datamodules.live2d.regions import check_overrides, drawable_kind
from datamodules.live2d.render_process import render_in_subprocess

SHARED = Path(os.environ.get("ANIME_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
MODELS = SHARED / "live2d"
needs_models = pytest.mark.skipif(not (MODELS / "Hiyori").is_dir(), reason=f"Live2D sample models not found under {MODELS} (set ANIME_SHARED_DIR)")


def model(name: str) -> Path:
    return find_setting_files(MODELS)[name]


def gray(rgba: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(composite(rgba, (255, 255, 255)), cv2.COLOR_RGB2GRAY).astype(np.float32)


POSES = np.stack([
    default_parameters(),
    parameters_from_mapping({"ParamEyeLOpen": 0.0}),
    parameters_from_mapping({"ParamAngleX": 30.0}),
    parameters_from_mapping({"ParamAngleX": -30.0}),
    default_parameters(),
])


@needs_models
@pytest.mark.parametrize("name", ["Hiyori", "Haru"])
def test_standard_parameters_pose_the_character_as_named(name):
    result = render_in_subprocess(model(name), POSES, size=128)
    neutral, left_closed, turned_right, turned_left, neutral_again = result.frames
    assert result.frames.shape == (5, 128, 128, 4) and result.missing == []
    assert np.array_equal(neutral, neutral_again), "same parameters must give the same pixels"
    assert neutral[..., 3].mean() > 100, "the crop should be filled by the character"
    closing = np.abs(gray(left_closed) - gray(neutral))
    assert closing[:, 64:].sum() > 3 * closing[:, :64].sum(), "ParamEyeLOpen is the eye on the image's right"
    assert np.abs(gray(turned_right) - gray(neutral)).mean() > 2 and np.abs(gray(turned_left) - gray(neutral)).mean() > 2


def area(regions: np.ndarray, name: str) -> int:
    return int((regions == REGIONS.index(name)).sum())


@needs_models
@pytest.mark.parametrize("name", ["Hiyori", "Mark", "Koharu", "Hibiki", "Tororo"])  # Cubism 3, 3, 2, 2 (head out of the default view), 2 (a cat)
def test_region_maps_and_keypoints_follow_the_rig(name):
    cubism2 = model(name).name.endswith(".model.json")
    result = render_in_subprocess(model(name), POSES, size=128)
    neutral, left_closed, turned_right, turned_left, _ = range(5)
    regions, keypoints = result.regions, result.keypoints
    assert regions.shape == (5, 128, 128) and keypoints.shape == (5, len(KEYPOINT_NAMES), 2)
    opaque = result.frames[..., 3] >= 128
    assert np.array_equal(regions != REGIONS.index("background"), opaque), "background exactly where the image is transparent"
    for region in ("face", "left_eye", "right_eye", "mouth") + (() if name == "Tororo" else ("hair",)):
        assert area(regions[neutral], region) > 5, f"{region} should be visible at the default pose"
    ys, xs = np.nonzero(regions[neutral] == REGIONS.index("left_eye"))
    assert xs.mean() > 64, "the character's left eye is on the image's right"
    ys, xs = np.nonzero(regions[neutral] == REGIONS.index("right_eye"))
    assert xs.mean() < 64, "the character's right eye is on the image's left"
    if cubism2:  # the lids are drawables of the eye part, and Cubism 2 colours labels per part: the region stays
        change = np.abs(gray(result.frames[left_closed]) - gray(result.frames[neutral])) > 16
        in_eye = regions[neutral] == REGIONS.index("left_eye")
        assert change[in_eye].mean() > 5 * change[~in_eye].mean(), "closing the left eye changes pixels inside its region"
    else:
        assert area(regions[left_closed], "left_eye") < 0.6 * area(regions[neutral], "left_eye"), "closing the left eye shrinks its region"
    assert area(regions[left_closed], "right_eye") > 0.9 * area(regions[neutral], "right_eye")
    point = {n: keypoints[neutral, i] for i, n in enumerate(KEYPOINT_NAMES)}
    x, y = np.round(point["left_eye"]).astype(int)
    assert regions[neutral, y - 2 : y + 3, x - 2 : x + 3].flatten().tolist().count(REGIONS.index("left_eye")) > 0
    assert point["left_eye"][0] > point["right_eye"][0] and point["mouth_left"][0] > point["mouth_right"][0]
    assert point["left_brow"][1] < point["left_eye"][1] < point["mouth_top"][1] < point["mouth_bottom"][1] <= point["chin"][1]
    face_points = [KEYPOINT_NAMES.index(n) for n in ("left_eye", "right_eye", "nose", "mouth_top")]
    shift = keypoints[:, face_points, 0].mean(1) - keypoints[neutral, face_points, 0].mean()
    assert shift[turned_right] > 0.3 and shift[turned_left] < -0.3, "ParamAngleX moves the keypoints horizontally"
    assert np.abs(keypoints[turned_right, face_points, 1] - keypoints[neutral, face_points, 1]).mean() < abs(shift[turned_right])


@needs_models
def test_unnamed_meshes_need_region_overrides():
    mouthless = render_in_subprocess(model("Rice"), POSES[:1], size=32, region_overrides={"ArtMesh38": "face"})
    assert mouthless.regions is None and mouthless.keypoints is None and mouthless.frames.shape == (1, 32, 32, 4)
    assert "no drawables for mouth" in mouthless.ground_truth_problem and "region overrides" in mouthless.ground_truth_problem
    rice = render_in_subprocess(model("Rice"), POSES[:1], size=64)  # built-in override: ArtMesh38 is her mouth
    point = dict(zip(KEYPOINT_NAMES, rice.keypoints[0]))
    assert point["right_eye"][0] < point["mouth_top"][0] < point["left_eye"][0] and point["mouth_top"][1] > point["left_eye"][1]


def test_drawables_are_classified_by_their_part_names():
    def drawable(id: str, *parts: str) -> Drawable:
        return Drawable(id, parts, 0, 0, np.zeros((0, 2)), np.zeros((0, 3), int), True)

    assert drawable_kind(drawable("ArtMesh12", "Part01EyeBall001", "Part01Eye001")) == "iris"
    assert drawable_kind(drawable("D_BROW_00", "PARTS_01_BROW_001")) == "brow"
    assert drawable_kind(drawable("ArtMesh3", "ArtMesh55_Skinning", "PartHairSide")) == "hair"
    assert drawable_kind(drawable("ArtMesh3", "PartWear")) == "body", "words, not substrings: Wear is no ear"
    assert drawable_kind(drawable("ArtMesh38", "PartFace"), {"ArtMesh38": "mouth"}) == "mouth"
    with pytest.raises(ValueError, match="unknown kinds"):
        check_overrides({"PartX": "tail"}, "test")


@needs_models
def test_other_parameter_spellings_are_bound():
    wanko = render_in_subprocess(model("Wanko"), POSES[:1], size=32)
    assert wanko.bindings["ParamAngleX"] == "PARAM_ANGLE_X" and wanko.bindings["ParamMouthOpenY"] == "PARAM_MOUTH_OPEN_Y"
    mao = render_in_subprocess(model("Mao"), POSES[:1], size=32)
    assert mao.bindings["ParamMouthOpenY"] == "ParamA" and "ParamMouthForm" in mao.missing


@needs_models
def test_bad_model_files_are_named_before_the_core_sees_them(tmp_path):
    with pytest.raises(Live2DModelError, match="does not exist"):
        read_model_files(tmp_path / "Nobody.model3.json")
    copy = tmp_path / "Haru"
    shutil.copytree(MODELS / "Haru", copy)
    setting = json.loads((copy / "Haru.model3.json").read_text())
    (copy / setting["FileReferences"]["Textures"][0]).unlink()
    with pytest.raises(Live2DModelError, match=r"Textures\[0\].*does not exist"):
        read_model_files(copy / "Haru.model3.json")
    (copy / "Broken.model3.json").write_text("{not json")
    with pytest.raises(Live2DModelError, match="not a readable model3.json file"):
        read_model_files(copy / "Broken.model3.json")
    moc = copy / setting["FileReferences"]["Moc"]
    moc.write_bytes(b"\0" * 100)
    setting["FileReferences"]["Textures"] = []
    (copy / "NoTex.model3.json").write_text(json.dumps(setting))
    with pytest.raises(Live2DModelError, match="no MOC3 header"):
        read_model_files(copy / "NoTex.model3.json")


@needs_models
def test_physics_follows_the_pose_and_keeps_moving_after_a_head_turn():
    poses = np.stack([default_parameters()] + [parameters_from_mapping({"ParamAngleX": 30.0})] * 6)
    still, swaying = render_in_subprocess(model("Haru"), poses, size=64), render_in_subprocess(model("Haru"), poses, size=64, physics=True)
    assert np.array_equal(still.frames[1], still.frames[-1]), "without physics a pose gives the same pixels every frame"
    assert not np.array_equal(swaying.frames[-2], swaying.frames[-1]), "with physics the hair keeps moving after the turn"
    assert not np.array_equal(still.frames[-1], swaying.frames[-1])
