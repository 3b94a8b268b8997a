"""Live2D's standard face parameters: the shared motion vocabulary of every data source.

The procedural puppet and Live2D Cubism models are driven by the same named parameters with the same
ranges, so one parameter vector gives corresponding poses on different characters. Conventions follow
Live2D's: ``ParamAngleX=+30`` turns the head toward the image's right, ``ParamEyeLOpen`` is the
character's left eye (on the image's right), ``ParamBrowLY=+1`` raises that brow.
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


def normalize_parameters(values: np.ndarray) -> np.ndarray:
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
