"""The names every part of the project shares: standard parameters, region labels, keypoints, face features.

**Parameters.** The procedural puppet and Live2D Cubism models are driven by Live2D's standard face parameters
with the same ranges, so one parameter vector gives corresponding poses on different characters. Conventions
follow Live2D's: ``ParamAngleX=+30`` turns the head toward the image's right, ``ParamEyeLOpen`` is the
character's left eye (on the image's right), ``ParamBrowLY=+1`` raises that brow. Vectors are ``(..., P)`` in
:data:`PARAMETER_NAMES` order.

**Regions.** A region map is ``H×W`` int64, each pixel the index of its label in :data:`REGIONS`; the puppet and
the Live2D renderer both write it.

**Keypoints.** ``K×2`` pixel coordinates (x right, y down, origin at the top-left pixel's corner) in
:data:`KEYPOINT_NAMES` order; "left" is the character's left, as for the parameters.

**Face features.** The MediaPipe-to-canonical adapter reads :data:`FEATURE_DIM` numbers per human face
(``datamodules.face_landmarks.landmark_features``: landmarks, blendshapes, head pose).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParameterRange:
    """Range of one standard parameter: ``minimum <= default <= maximum``."""

    minimum: float
    default: float
    maximum: float


STANDARD_PARAMETERS: dict[str, ParameterRange] = {
    "ParamAngleX": ParameterRange(-30.0, 0.0, 30.0),
    "ParamAngleY": ParameterRange(-30.0, 0.0, 30.0),
    "ParamAngleZ": ParameterRange(-30.0, 0.0, 30.0),
    "ParamEyeLOpen": ParameterRange(0.0, 1.0, 1.0),
    "ParamEyeROpen": ParameterRange(0.0, 1.0, 1.0),
    "ParamEyeBallX": ParameterRange(-1.0, 0.0, 1.0),
    "ParamEyeBallY": ParameterRange(-1.0, 0.0, 1.0),
    "ParamBrowLY": ParameterRange(-1.0, 0.0, 1.0),
    "ParamBrowRY": ParameterRange(-1.0, 0.0, 1.0),
    "ParamMouthOpenY": ParameterRange(0.0, 0.0, 1.0),
    "ParamMouthForm": ParameterRange(-1.0, 0.0, 1.0),
}
PARAMETER_NAMES: tuple[str, ...] = tuple(STANDARD_PARAMETERS)
PARAMETER_INDEX: dict[str, int] = {name: i for i, name in enumerate(PARAMETER_NAMES)}

REGIONS: tuple[str, ...] = (
    "background", "face", "left_eye", "right_eye", "left_brow", "right_brow", "mouth", "hair", "body",
)
HEAD_REGIONS: tuple[str, ...] = ("face", "left_eye", "right_eye", "left_brow", "right_brow", "mouth", "hair")
"""The regions that move with the head (the rest — background, body — stays when only the head turns)."""
EXPRESSION_REGIONS: tuple[str, ...] = ("left_eye", "right_eye", "left_brow", "right_brow", "mouth")
"""The few regions that carry expression (blinks, brows, talking)."""
KEYPOINT_NAMES: tuple[str, ...] = (
    "left_eye", "right_eye", "left_iris", "right_iris", "left_brow", "right_brow",
    "mouth_left", "mouth_right", "mouth_top", "mouth_bottom", "nose", "chin",
)

NUM_LANDMARKS = 478
"""MediaPipe Face Landmarker's landmarks per face (468 mesh points and 10 iris points)."""
NUM_BLENDSHAPES = 52
FEATURE_DIM = NUM_LANDMARKS * 3 + NUM_BLENDSHAPES + 3
"""Length of one face's feature vector: ``x, y, z`` per landmark, the blendshape scores, yaw/pitch/roll."""


def default_parameters() -> np.ndarray:
    """The neutral pose, shape ``(P,)`` float32 in ``PARAMETER_NAMES`` order."""
    return np.array([r.default for r in STANDARD_PARAMETERS.values()], dtype=np.float32)


def parameter_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds, each ``(P,)`` float32 in ``PARAMETER_NAMES`` order."""
    ranges = STANDARD_PARAMETERS.values()
    return (
        np.array([r.minimum for r in ranges], dtype=np.float32),
        np.array([r.maximum for r in ranges], dtype=np.float32),
    )


def parameters_in_unit_interval(values: np.ndarray) -> np.ndarray:
    """Map raw parameter values ``(..., P)`` to ``[0, 1]`` per parameter (minimum → 0, maximum → 1)."""
    low, high = parameter_bounds()
    return (np.asarray(values, dtype=np.float32) - low) / (high - low)


def parameters_from_mapping(values: dict[str, float]) -> np.ndarray:
    """A ``(P,)`` vector from ``{name: value}``; missing names take their default, unknown names raise.

    Raises:
        KeyError: a name that is not a standard parameter, listing the known ones.
        ValueError: a value outside that parameter's range.
    """
    vector = default_parameters()
    for name, value in values.items():
        if name not in PARAMETER_INDEX:
            raise KeyError(f"unknown parameter {name!r}; expected one of {', '.join(PARAMETER_NAMES)}")
        rng = STANDARD_PARAMETERS[name]
        if not rng.minimum <= value <= rng.maximum:
            raise ValueError(f"parameter {name}={value} is outside its range [{rng.minimum}, {rng.maximum}]")
        vector[PARAMETER_INDEX[name]] = value
    return vector
