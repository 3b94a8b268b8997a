"""Parameter trajectories for Live2D clips: smooth random face motion over the standard parameters.

A trajectory is ``T×P`` raw standard parameter values (see :mod:`core.vocabulary`), a pure function of its
seed. Replaying one trajectory on every character gives frames in corresponding poses: paired ground truth for
cross-identity reenactment.
"""

from __future__ import annotations

import numpy as np

from core.vocabulary import PARAMETER_INDEX, default_parameters, parameter_bounds


def _smooth_curve(rng: np.random.Generator, frames: int, low: float, high: float, spacing: int, scale: float) -> np.ndarray:
    """Cosine-eased interpolation between random keyframes ``spacing`` frames apart, clipped to ``[low, high]``."""
    keys = max(2, frames // spacing + 2)
    centre = (low + high) / 2
    values = np.clip(rng.normal(centre, scale * (high - low) / 2, keys), low, high)
    t = np.arange(frames) / spacing
    index = np.minimum(t.astype(int), keys - 2)
    frac = t - index
    eased = (1 - np.cos(np.pi * frac)) / 2
    return values[index] * (1 - eased) + values[index + 1] * eased


def random_trajectory(seed: int, frames: int, fps: float = 30.0) -> np.ndarray:
    """Head turns, gaze, brows, eyes closing (slowly, and in blinks) and talking: ``frames×P`` float32, starting from
    the neutral pose.

    Args:
        seed: fixes the trajectory.
        frames: number of frames ``T``.
        fps: frame rate, which sets the speed of motion (keyframes every ~0.4–0.8 s, blinks of ~0.2 s).
    """
    if frames < 1:
        raise ValueError(f"frames must be positive, got {frames}")
    rng = np.random.default_rng([0x11D2, seed])
    low, high = parameter_bounds()
    values = np.repeat(default_parameters()[None], frames, axis=0)
    spacing = max(2, int(fps * rng.uniform(0.4, 0.8)))
    ramp = np.minimum(1.0, np.arange(frames) / spacing)  # ease out of the neutral first frame
    for name in ("ParamAngleX", "ParamAngleY", "ParamAngleZ", "ParamEyeBallX", "ParamEyeBallY", "ParamBrowLY", "ParamMouthForm"):
        i = PARAMETER_INDEX[name]
        values[:, i] = values[0, i] + ramp * (_smooth_curve(rng, frames, low[i], high[i], spacing, 0.5) - values[0, i])
    values[:, PARAMETER_INDEX["ParamBrowRY"]] = values[:, PARAMETER_INDEX["ParamBrowLY"]]
    talking = np.clip(_smooth_curve(rng, frames, -0.6, 1.0, max(2, spacing // 3), 1.0), 0.0, 1.0)
    values[:, PARAMETER_INDEX["ParamMouthOpenY"]] = ramp * talking
    # Eyes: slow expressive closing (squints, eyes held shut: ~24 % of the frames below half open) and quick
    # blinks that close fully, so closed eyes are common enough to be learned (natural blinks alone are ~3 %).
    lids = np.clip(_smooth_curve(rng, frames, -0.3, 2.7, spacing, 0.8), 0.0, 1.0)
    eyes = 1.0 - ramp * (1.0 - lids)
    blink = max(3, int(0.2 * fps)) | 1  # odd: the middle frame is fully closed
    for start in range(int(fps * rng.uniform(0.5, 2.0)), frames, max(blink + 1, int(fps * rng.uniform(1.5, 4.0)))):
        span = np.arange(start, min(frames, start + blink))
        eyes[span] = np.minimum(eyes[span], np.abs(np.linspace(-1.0, 1.0, blink))[: len(span)])
    values[:, PARAMETER_INDEX["ParamEyeLOpen"]] = values[:, PARAMETER_INDEX["ParamEyeROpen"]] = eyes
    return values.astype(np.float32)
