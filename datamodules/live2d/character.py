"""``Live2DCharacter``: one Live2D Cubism model, posed by the standard parameters and rendered as a head crop.

Import this module only in the process that renders (it imports ``live2d`` and creates the GL context lazily;
see :mod:`datamodules.live2d.headless_gl`). The model files are checked in Python first, because a missing or
inconsistent file makes the Cubism core end the process instead of raising.

Rendering is deterministic: automatic blink and breath are off, no motions or expressions are loaded, physics
is loaded only when asked for, and every frame uses the same fixed time step. The portrait crop is the square
around the pixels that move when the head turns and the eyes and mouth move, so it follows the head on every
model without per-model tables, and it is fixed for the character (stable over a clip).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.live2d.headless_gl import HeadlessGL, live2d
from datamodules.parameters import PARAMETER_NAMES, STANDARD_PARAMETERS, default_parameters
from modules.errors import UserFacingError

# Other spellings of the standard parameters: Cubism 2-era IDs, and the vowel "A" that opens the mouth on models
# animated by vowels instead of ParamMouthOpenY.
ALIASES: dict[str, tuple[str, ...]] = {
    "ParamAngleX": ("PARAM_ANGLE_X",),
    "ParamAngleY": ("PARAM_ANGLE_Y",),
    "ParamAngleZ": ("PARAM_ANGLE_Z",),
    "ParamEyeLOpen": ("PARAM_EYE_L_OPEN",),
    "ParamEyeROpen": ("PARAM_EYE_R_OPEN",),
    "ParamEyeBallX": ("PARAM_EYE_BALL_X",),
    "ParamEyeBallY": ("PARAM_EYE_BALL_Y",),
    "ParamBrowLY": ("PARAM_BROW_L_Y",),
    "ParamBrowRY": ("PARAM_BROW_R_Y",),
    "ParamMouthOpenY": ("PARAM_MOUTH_OPEN_Y", "ParamA"),
    "ParamMouthForm": ("PARAM_MOUTH_FORM",),
}
# Poses whose moving pixels outline the head for the portrait crop.
_HEAD_PROBES: tuple[dict[str, float], ...] = (
    {"ParamAngleX": 30.0}, {"ParamAngleX": -30.0}, {"ParamAngleY": 30.0}, {"ParamAngleY": -30.0},
    {"ParamAngleZ": 30.0}, {"ParamAngleZ": -30.0}, {"ParamEyeLOpen": 0.0}, {"ParamEyeROpen": 0.0}, {"ParamMouthOpenY": 1.0},
)
_TIME_STEP = 1.0 / 30.0


class Live2DModelError(UserFacingError):
    """A Live2D model's files are missing, malformed, or it lacks the standard face parameters."""


def check_model_files(model_json: str | Path) -> dict:
    """Parse ``*.model3.json`` and check that every file it references exists and the .moc3 has its header.

    Returns:
        The parsed JSON.

    Raises:
        Live2DModelError: naming the file and the problem.
    """
    path = Path(model_json)
    if not path.is_file():
        raise Live2DModelError(f"Live2D model file {str(path)!r} does not exist")
    try:
        setting = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Live2DModelError(f"{str(path)!r} is not a readable model3.json: {exc}") from exc
    refs = setting.get("FileReferences") if isinstance(setting, dict) else None
    if not isinstance(refs, dict) or not isinstance(refs.get("Moc"), str) or not isinstance(refs.get("Textures"), list):
        raise Live2DModelError(f"{str(path)!r} lacks FileReferences.Moc (a path) and FileReferences.Textures (a list)")
    referenced = [("Moc", refs["Moc"])] + [(f"Textures[{i}]", t) for i, t in enumerate(refs["Textures"])]
    referenced += [(key, refs[key]) for key in ("Physics", "Pose") if isinstance(refs.get(key), str)]
    for key, relative in referenced:
        if not (path.parent / relative).is_file():
            raise Live2DModelError(f"{str(path)!r}: FileReferences.{key} = {relative!r} does not exist")
    moc = path.parent / refs["Moc"]
    with open(moc, "rb") as handle:
        header = handle.read(64)
    if len(header) < 64 or header[:4] != b"MOC3":
        raise Live2DModelError(f"{str(moc)!r} is not a .moc3 file (no MOC3 header; truncated or corrupt?)")
    return setting


@dataclass(frozen=True)
class ParameterBinding:
    """How one standard parameter drives a model parameter (piecewise linear through min, default and max)."""

    standard: str
    model_id: str
    minimum: float
    default: float
    maximum: float

    def to_model(self, value: float) -> float:
        """Map a standard value to this model's range: standard min/default/max land on the model's."""
        std = STANDARD_PARAMETERS[self.standard]
        xs, ys = [std.minimum], [self.minimum]
        if std.default > std.minimum:
            xs.append(std.default)
            ys.append(self.default)
        if std.maximum > std.default:
            xs.append(std.maximum)
            ys.append(self.maximum)
        return float(np.interp(value, xs, ys))

    def to_standard(self, value: float) -> float:
        """The inverse of :meth:`to_model`: a model value back on the standard scale."""
        std = STANDARD_PARAMETERS[self.standard]
        xs, ys = [self.minimum], [std.minimum]
        if self.default > self.minimum and std.default > std.minimum:
            xs.append(self.default)
            ys.append(std.default)
        if self.maximum > xs[-1] and std.maximum > ys[-1]:
            xs.append(self.maximum)
            ys.append(std.maximum)
        return float(np.interp(value, xs, ys))


class Live2DCharacter:
    """A Live2D model rendered headlessly as a ``size×size`` head crop.

    Args:
        model_json: the model's ``*.model3.json``.
        size: output height and width in pixels.
        physics: load the model's physics (hair and clothes sway); off gives frames that depend only on the
            parameters.
        crop_padding: the crop's side as a multiple of the moving head's extent.
        motions: load the model's authored motions (for :meth:`render_motion`). The model is then loaded as
            published, physics included (live2d-py 1.0.0 crashes on a model loaded from an edited JSON string
            that lists motions).

    Raises:
        Live2DModelError: bad files, or none of the standard face parameters.
    """

    def __init__(self, model_json: str | Path, size: int = 256, physics: bool = False, crop_padding: float = 1.3, motions: bool = False) -> None:
        self.path = Path(model_json)
        self.name = self.path.name.removesuffix(".model3.json")
        setting = check_model_files(self.path)
        self.gl = HeadlessGL.current()
        self.model = live2d.Model()
        if motions:
            self.model.LoadModelJson(str(self.path))
        else:
            refs = {k: v for k, v in setting["FileReferences"].items() if k not in ("Motions", "Expressions") and (physics or k != "Physics")}
            self.model.LoadFromJsonString(json.dumps({**setting, "FileReferences": refs}), True, str(self.path.parent) + "/")
        self.model.SetAutoBlink(False)
        self.model.SetAutoBreath(False)
        self.bindings = self._bind_parameters()
        if not self.bindings:
            raise Live2DModelError(f"{str(self.path)!r} has none of the standard face parameters ({', '.join(PARAMETER_NAMES)})")
        self.size = size
        self.crop = self._head_box(crop_padding)
        self.model.Resize(size, size)
        scale = 1.0 / self.crop[2]
        self.model.SetScale(scale)
        self.model.SetOffset(-scale * self.crop[0], -scale * self.crop[1])

    @property
    def missing(self) -> list[str]:
        """Standard parameters this model does not have (they are ignored when posing)."""
        return [name for name in PARAMETER_NAMES if name not in self.bindings]

    def _bind_parameters(self) -> dict[str, ParameterBinding]:
        ids = set(self.model.GetParamIds())
        bindings = {}
        for name in PARAMETER_NAMES:
            model_id = next((c for c in (name, *ALIASES.get(name, ())) if c in ids), None)
            if model_id is not None:
                bindings[name] = ParameterBinding(
                    name, model_id, self.model.GetParamMinById(model_id), self.model.GetParamDefaultById(model_id), self.model.GetParamMaxById(model_id)
                )
        return bindings

    def _draw(self, params: np.ndarray, size: int) -> np.ndarray:
        self.gl.bind(size)
        self.model.ResetAllParameters()
        self.model.Update(_TIME_STEP)
        for name, binding in self.bindings.items():
            self.model.SetParamById(binding.model_id, binding.to_model(float(params[PARAMETER_NAMES.index(name)])))
        self.model.Draw()
        return self.gl.read(size)

    def _head_box(self, padding: float, probe_size: int = 384) -> tuple[float, float, float]:
        """Centre (x, y) and half side of the head crop, in the uncropped view's normalised device coordinates."""
        self.model.Resize(probe_size, probe_size)
        neutral = default_parameters()
        base = self._draw(neutral, probe_size).astype(np.int16)
        moving = np.zeros(base.shape[:2], bool)
        for probe in _HEAD_PROBES:
            if probe.keys() <= self.bindings.keys():
                params = neutral.copy()
                for name, value in probe.items():
                    params[PARAMETER_NAMES.index(name)] = value
                moving |= np.abs(self._draw(params, probe_size).astype(np.int16) - base).sum(-1) > 24
        ys, xs = np.nonzero(moving)
        if len(xs) < 16:
            raise Live2DModelError(f"{str(self.path)!r}: the standard parameters move nothing visible; cannot find the head")
        x0, x1 = np.percentile(xs, [1, 99])
        y0, y1 = np.percentile(ys, [1, 99])
        centre_x, centre_y = (x0 + x1 + 1) / probe_size - 1.0, 1.0 - (y0 + y1 + 1) / probe_size
        half = padding * max(x1 - x0 + 1, y1 - y0 + 1) / probe_size
        return float(centre_x), float(centre_y), float(half)

    def render(self, params: np.ndarray) -> np.ndarray:
        """The head crop posed by ``params`` (``(P,)`` raw standard values): ``size×size×4`` uint8 RGBA, alpha
        premultiplied."""
        params = np.asarray(params, dtype=np.float32)
        if params.shape != (len(PARAMETER_NAMES),):
            raise ValueError(f"expected {len(PARAMETER_NAMES)} standard parameters, got shape {params.shape}")
        return self._draw(params, self.size)


    def render_motion(self, group: str, index: int, fps: float, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Play authored motion ``group[index]`` (its curves drive every parameter it animates) at ``fps``.

        Returns:
            Frames ``T×S×S×4`` uint8 RGBA (premultiplied) and the standard parameters read back from the model,
            ``T×P`` float32 (defaults where the model lacks one); ``T`` is the motion's length, at most
            ``max_frames``.

        Raises:
            Live2DModelError: no such motion (the character must be created with ``motions=True``).
        """
        groups = self.model.GetMotionGroups()
        if not 0 <= index < groups.get(group, 0):
            raise Live2DModelError(f"{str(self.path)!r} has no motion {group}[{index}] (motion groups: {groups})")
        self.model.ResetAllParameters()
        self.model.ResetPose()
        self.model.StopAllMotions()
        self.model.StartMotion(group, index, 3)
        frames, params = [], []
        for _ in range(max_frames):
            self.gl.bind(self.size)
            self.model.Update(1.0 / fps)
            values = default_parameters()
            for name, binding in self.bindings.items():
                values[PARAMETER_NAMES.index(name)] = binding.to_standard(self.model.GetParamValueById(binding.model_id))
            self.model.Draw()
            frames.append(self.gl.read(self.size))
            params.append(values)
            if self.model.IsMotionFinished():
                break
        return np.stack(frames), np.stack(params).astype(np.float32)


def composite(rgba: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Premultiplied ``H×W×4`` uint8 RGBA over a solid ``background`` colour → ``H×W×3`` uint8 RGB."""
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) + (1.0 - alpha) * np.asarray(background, np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)
