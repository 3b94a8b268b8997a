"""``Live2DCharacter``: one Live2D Cubism model, posed by the standard parameters and rendered as a head crop
with its ground truth (region map, keypoints).

Import this module only in the process that renders (it imports ``live2d`` and creates the GL context lazily;
see :mod:`datamodules.live2d.headless_gl`). The model files are checked in Python first, because a missing or
inconsistent file makes the Cubism core end the process instead of raising.

Rendering is deterministic: automatic blink and breath are off, no motions or expressions are loaded, physics
is loaded only when asked for, and every frame uses the same fixed time step. The portrait crop is a square
around the face drawables (skin, eyes, brows, mouth; see :mod:`datamodules.live2d.regions`) at the default pose,
fixed for the character (stable over a clip).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datamodules.live2d.headless_gl import HeadlessGL, live2d
from datamodules.live2d.keypoints import rig_keypoints
from datamodules.live2d.moc import read_moc_layout
from datamodules.live2d.regions import REGION_OVERRIDES, check_overrides, decode_labels, drawable_kind, paint_label_textures, region_names
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
FACE_KINDS = ("face", "eye", "iris", "brow", "mouth", "nose")  # the kinds that make up the face for the crop
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


@dataclass(frozen=True)
class Live2DFrame:
    """One rendered frame with its ground truth.

    Attributes:
        image: ``S×S×4`` uint8 RGBA, alpha premultiplied.
        regions: ``S×S`` uint8 indices into :data:`~datamodules.puppet.REGIONS`.
        keypoints: ``K×2`` float32 pixel coordinates (x right, y down) in
            :data:`~datamodules.puppet.KEYPOINT_NAMES` order.
    """

    image: np.ndarray
    regions: np.ndarray
    keypoints: np.ndarray


class Live2DCharacter:
    """A Live2D model rendered headlessly as a ``size×size`` head crop with region maps and keypoints.

    Args:
        model_json: the model's ``*.model3.json``.
        size: output height and width in pixels.
        physics: load the model's physics (hair and clothes sway); off gives frames that depend only on the
            parameters.
        crop_padding: the crop's side as a multiple of the face's extent (skin, eyes, brows, mouth at the
            default pose).
        motions: load the model's authored motions (for :meth:`render_motion`). The model is then loaded as
            published, physics included (live2d-py 1.0.0 crashes on a model loaded from an edited JSON string
            that lists motions).
        region_overrides: part or drawable ID → kind, on top of :data:`~datamodules.live2d.regions.REGION_OVERRIDES`
            for this model (see :mod:`datamodules.live2d.regions`).

    Raises:
        Live2DModelError: bad files, none of the standard face parameters, or no drawable recognisable as the face.
    """

    def __init__(self, model_json: str | Path, size: int = 256, physics: bool = False, crop_padding: float = 1.7,
                 motions: bool = False, region_overrides: dict[str, str] | None = None) -> None:
        self.path = Path(model_json)
        self.name = self.path.name.removesuffix(".model3.json")
        setting = check_model_files(self.path)
        self.gl = HeadlessGL.current()
        self.model = live2d.Model()
        if motions:
            self.model.LoadModelJson(str(self.path))
        else:
            self.model.LoadFromJsonString(json.dumps(_without_motions(setting, physics)), True, str(self.path.parent) + "/")
        self.model.SetAutoBlink(False)
        self.model.SetAutoBreath(False)
        self.bindings = self._bind_parameters()
        if not self.bindings:
            raise Live2DModelError(f"{str(self.path)!r} has none of the standard face parameters ({', '.join(PARAMETER_NAMES)})")
        self.size = size
        self.model.Resize(size, size)
        self._classify(setting, {**REGION_OVERRIDES.get(self.name, {}), **(region_overrides or {})})
        self.crop = self._face_box(crop_padding)
        self.labels = self._label_model(setting, physics or motions)
        for model in (self.model, self.labels):
            model.Resize(size, size)
            scale = 1.0 / self.crop[2]
            model.SetScale(scale)
            model.SetOffset(-scale * self.crop[0], -scale * self.crop[1])

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

    def _classify(self, setting: dict, overrides: dict[str, str]) -> None:
        """Kind and region of every drawable, from the moc's part tree and the default pose's meshes."""
        check_overrides(overrides, f"region overrides for {self.name}")
        self.layout = read_moc_layout(self.path.parent / setting["FileReferences"]["Moc"])
        if [d.id for d in self.layout] != list(self.model.GetDrawableIds()):
            raise Live2DModelError(f"{str(self.path)!r}: the moc's drawables differ from the loaded model's")
        self.kinds = [drawable_kind(d, overrides) for d in self.layout]
        self._pose(default_parameters())
        self.gl.bind(self.size)
        self.model.Draw()
        meshes = self._meshes()
        eyes = [m for m, k in zip(meshes, self.kinds) if k in ("eye", "iris") and len(m)]
        if not eyes:
            raise Live2DModelError(f"{str(self.path)!r}: no drawable is recognisable as an eye (part IDs: "
                                   f"{', '.join(sorted({p for d in self.layout for p in d.parts}))}); give region overrides")
        all_eyes = np.concatenate(eyes)
        midline = (all_eyes[:, 0].min() + all_eyes[:, 0].max()) / 2
        centres = np.array([(m[:, 0].min() + m[:, 0].max()) / 2 if len(m) else midline for m in meshes])
        self.regions = region_names(self.kinds, centres, midline)
        try:
            rig_keypoints(meshes, self.regions, self.kinds)
        except ValueError as exc:
            raise Live2DModelError(f"{str(self.path)!r}: {exc}") from exc

    def _meshes(self) -> list[np.ndarray]:
        """Each drawable's current vertices in normalised device coordinates (x right, y up), ``V×2``; empty
        for drawables outside the face (:data:`FACE_KINDS`) and those not shown at the default pose."""
        mvp = np.asarray(self.model.GetMvp(), np.float32).reshape(4, 4)
        meshes = []
        for index, (drawable, kind) in enumerate(zip(self.layout, self.kinds)):
            shown = drawable.visible and kind in FACE_KINDS
            vertices = np.asarray(self.model.GetDrawableVertices(index), np.float32).reshape(-1, 2) if shown else np.zeros((0, 2), np.float32)
            meshes.append(vertices @ mvp[:2, :2] + mvp[3, :2])
        return meshes

    def _face_box(self, padding: float) -> tuple[float, float, float]:
        """Centre (x, y) and half side of the head crop in the uncropped view's normalised device coordinates,
        from the face's meshes at the default pose (with room above for hair)."""
        points = np.concatenate(self._meshes())
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        half = padding * max(x1 - x0, y1 - y0) / 2
        return float((x0 + x1) / 2), float((y0 + y1) / 2 + 0.15 * half), float(half)

    def _label_model(self, setting: dict, physics: bool) -> live2d.Model:
        """A second instance of the model whose textures are painted in region colours (same parts, pose and
        physics)."""
        self._label_dir = tempfile.TemporaryDirectory(prefix=f"live2d-labels-{self.name}-")
        refs = setting["FileReferences"]
        textures = paint_label_textures([self.path.parent / t for t in refs["Textures"]], self.layout, self.regions, Path(self._label_dir.name))
        published = _without_motions(setting, physics)["FileReferences"]
        absolute = {key: str(self.path.parent / value) for key, value in published.items() if isinstance(value, str)}
        labels = live2d.Model()
        labels.LoadFromJsonString(json.dumps({**setting, "FileReferences": {**absolute, "Textures": [str(t) for t in textures]}}), True, "")
        labels.SetAutoBlink(False)
        labels.SetAutoBreath(False)
        return labels

    def _pose(self, params: np.ndarray) -> None:
        self.model.ResetAllParameters()
        self.model.Update(_TIME_STEP)
        for name, binding in self.bindings.items():
            self.model.SetParamById(binding.model_id, binding.to_model(float(params[PARAMETER_NAMES.index(name)])))

    def _capture(self) -> Live2DFrame:
        """Draw the posed model and its label twin (given the same parameter values) and read both back."""
        self.gl.bind(self.size)
        self.model.Draw()
        image = self.gl.read(self.size)
        pixels = [np.stack([(m[:, 0] + 1.0) * self.size / 2, (1.0 - m[:, 1]) * self.size / 2], 1) for m in self._meshes()]
        keypoints = rig_keypoints(pixels, self.regions, self.kinds)
        self.gl.bind(self.size)
        self.labels.Update(_TIME_STEP)
        for index in range(self.model.GetParamCount()):
            self.labels.SetParamByIndex(index, self.model.GetParamValueByIndex(index))
        self.labels.Draw()
        return Live2DFrame(image, decode_labels(self.gl.read(self.size)), keypoints)

    def render(self, params: np.ndarray) -> Live2DFrame:
        """The head crop posed by ``params`` (``(P,)`` raw standard values) with its ground truth."""
        params = np.asarray(params, dtype=np.float32)
        if params.shape != (len(PARAMETER_NAMES),):
            raise ValueError(f"expected {len(PARAMETER_NAMES)} standard parameters, got shape {params.shape}")
        self._pose(params)
        return self._capture()

    def render_motion(self, group: str, index: int, fps: float, max_frames: int) -> tuple[list[Live2DFrame], np.ndarray]:
        """Play authored motion ``group[index]`` (its curves drive every parameter it animates) at ``fps``.

        Returns:
            The frames and the standard parameters read back from the model, ``T×P`` float32 (defaults where the
            model lacks one); ``T`` is the motion's length, at most ``max_frames``.

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
            self.model.Update(1.0 / fps)
            values = default_parameters()
            for name, binding in self.bindings.items():
                values[PARAMETER_NAMES.index(name)] = binding.to_standard(self.model.GetParamValueById(binding.model_id))
            frames.append(self._capture())
            params.append(values)
            if self.model.IsMotionFinished():
                break
        return frames, np.stack(params).astype(np.float32)


def _without_motions(setting: dict, physics: bool) -> dict:
    """``setting`` without motions and expressions, and without physics unless asked for."""
    refs = {k: v for k, v in setting["FileReferences"].items() if k not in ("Motions", "Expressions") and (physics or k != "Physics")}
    return {**setting, "FileReferences": refs}

