"""Live2D rendering of the shared Cubism sample models (skipped with a reason where they are absent)."""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from datamodules.live2d.character import Live2DModelError, check_model_files, composite
from datamodules.live2d.render_process import render_in_subprocess
from datamodules.parameters import default_parameters, parameters_from_mapping

SHARED = Path(os.environ.get("ANIME_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
MODELS = SHARED / "live2d"
needs_models = pytest.mark.skipif(not (MODELS / "Hiyori").is_dir(), reason=f"Live2D sample models not found under {MODELS} (set ANIME_SHARED_DIR)")


def model(name: str) -> Path:
    return MODELS / name / f"{name}.model3.json"


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
    ys, xs = np.nonzero(closing > 30)  # the left eye: where closing it changed the image
    window = np.s_[max(0, ys.min() - 8) : ys.max() + 8, max(0, xs.min() - 8) : xs.max() + 8]
    (shift_right, _), _ = cv2.phaseCorrelate(gray(neutral)[window], gray(turned_right)[window])
    (shift_left, _), _ = cv2.phaseCorrelate(gray(neutral)[window], gray(turned_left)[window])
    assert shift_right > 0.5 and shift_left < -0.5, "ParamAngleX=+30 turns the head toward the image's right"


@needs_models
def test_other_parameter_spellings_are_bound():
    wanko = render_in_subprocess(model("Wanko"), POSES[:1], size=32)
    assert wanko.bindings["ParamAngleX"] == "PARAM_ANGLE_X" and wanko.bindings["ParamMouthOpenY"] == "PARAM_MOUTH_OPEN_Y"
    mao = render_in_subprocess(model("Mao"), POSES[:1], size=32)
    assert mao.bindings["ParamMouthOpenY"] == "ParamA" and "ParamMouthForm" in mao.missing


@needs_models
def test_bad_model_files_are_named_before_the_core_sees_them(tmp_path):
    with pytest.raises(Live2DModelError, match="does not exist"):
        check_model_files(tmp_path / "Nobody.model3.json")
    copy = tmp_path / "Haru"
    shutil.copytree(MODELS / "Haru", copy)
    setting = json.loads((copy / "Haru.model3.json").read_text())
    (copy / setting["FileReferences"]["Textures"][0]).unlink()
    with pytest.raises(Live2DModelError, match=r"Textures\[0\].*does not exist"):
        check_model_files(copy / "Haru.model3.json")
    (copy / "Broken.model3.json").write_text("{not json")
    with pytest.raises(Live2DModelError, match="not a readable model3.json"):
        check_model_files(copy / "Broken.model3.json")
    moc = copy / setting["FileReferences"]["Moc"]
    moc.write_bytes(b"\0" * 100)
    setting["FileReferences"]["Textures"] = []
    (copy / "NoTex.model3.json").write_text(json.dumps(setting))
    with pytest.raises(Live2DModelError, match="no MOC3 header"):
        check_model_files(copy / "NoTex.model3.json")
