"""``Live2DCharacter``: one Live2D model of either generation (Cubism 3/4 or Cubism 2), posed by the standard
parameters and rendered as a head crop with its ground truth (region map, keypoints).

Import this module only in the process that renders (it imports ``live2d`` and creates the GL context lazily;
see :mod:`datamodules.live2d.headless_gl`). The model files are checked in Python first, because a missing or
inconsistent file makes the Cubism core end the process instead of raising.

Rendering is deterministic: automatic blink and breath are off, no motions or expressions are loaded, physics
is loaded only when asked for, and every frame uses the same fixed time step. The portrait crop is a square
around the face drawables (skin, eyes, brows, mouth; see :mod:`datamodules.live2d.regions`) at the default pose,
fixed for the character (stable over a clip).

The generations differ only in how the drawables' parts are found and how the label twin is coloured: Cubism 3
reads the part tree from the ``.moc3`` (:mod:`datamodules.live2d.moc`) and paints label textures; Cubism 2 finds
each drawable's part with a colour probe and colours the twin's parts (:mod:`datamodules.live2d.cubism2`, which
also lists what Cubism 2 cannot tell). A model whose face lacks eyes or a mouth (and has no region overrides
for them) still renders frames and parameters; :attr:`Live2DCharacter.ground_truth_problem` says why it has no
region maps and keypoints.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from datamodules.live2d.cubism2 import cubism2_layout, paint_parts, visible_parts
from datamodules.live2d.headless_gl import HeadlessGL, live2d
from datamodules.live2d.keypoints import rig_keypoints
from datamodules.live2d.moc import Drawable, read_moc_layout
from datamodules.live2d.model_files import Live2DModelError, read_model_files
from datamodules.live2d.regions import (REGION_OVERRIDES, check_overrides, decode_labels, drawable_kind, paint_label_textures,
                                        region_names, split_sides)
from core.vocabulary import KEYPOINT_NAMES, PARAMETER_NAMES, STANDARD_PARAMETERS, default_parameters

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
        regions: ``S×S`` uint8 indices into :data:`~core.vocabulary.REGIONS`; ``None`` for a model without
            ground truth.
        keypoints: ``K×2`` float32 pixel coordinates (x right, y down) in
            :data:`~core.vocabulary.KEYPOINT_NAMES` order; ``None`` for a model without ground truth.
    """

    image: np.ndarray
    regions: np.ndarray | None
    keypoints: np.ndarray | None


class Live2DCharacter:
    """A Live2D model rendered headlessly as a ``size×size`` head crop with region maps and keypoints.

    Args:
        model_json: the model's ``*.model3.json`` (Cubism 3/4) or ``*.model.json`` (Cubism 2).
        size: output height and width in pixels.
        physics: load the model's physics (hair and clothes sway); off gives frames that depend only on the
            parameters.
        crop_padding: the crop's side as a multiple of the face's extent (skin, eyes, brows, mouth at the
            default pose).
        motions: load the model's authored motions (for :meth:`render_motion`). The model is then loaded as
            published, physics included (live2d-py 1.0.0 crashes on a model loaded from an edited JSON string
            that lists motions).
        region_overrides: part or drawable ID → kind, on top of :data:`~datamodules.live2d.regions.REGION_OVERRIDES`
            for this model (see :mod:`datamodules.live2d.regions`); Cubism 2 models take part IDs only.

    Attributes:
        generation: 3 (Cubism 3/4) or 2 (Cubism 2).
        crop: head crop (centre x, centre y, half side) in the full view's normalised device coordinates.
        ground_truth_problem: why frames come without region maps and keypoints (``None`` when they have them).
        label_overlays: Cubism 2 parts hidden in the label twin because they cover the eyes or mouth.

    Raises:
        Live2DModelError: bad files, none of the standard face parameters, or no drawable recognisable as the face.
    """

    def __init__(self, model_json: str | Path, size: int = 256, physics: bool = False, crop_padding: float = 1.7,
                 motions: bool = False, region_overrides: dict[str, str] | None = None) -> None:
        self.files = read_model_files(model_json)
        self.path, self.name, self.generation = self.files.path, self.files.name, self.files.generation
        self.gl = HeadlessGL.current()
        self.model = live2d.Model()
        if motions:
            self.files.check_motions_loadable()
            self.model.LoadModelJson(str(self.path))
        else:
            self.model.LoadFromJsonString(self.files.setting_json(physics), True, "")
        self.model.SetAutoBlink(False)
        self.model.SetAutoBreath(False)
        self.bindings = self._bind_parameters()
        if not self.bindings:
            raise Live2DModelError(f"{str(self.path)!r} has none of the standard face parameters ({', '.join(PARAMETER_NAMES)})")
        self.size = size
        self.model.Resize(size, size)
        self._classify({**REGION_OVERRIDES.get(self.name, {}), **(region_overrides or {})})
        self.crop = self._face_box(crop_padding)
        self.labels = self._label_model(physics or motions) if self.ground_truth_problem is None else None
        for model in (self.model, self.labels):
            if model is not None:
                model.Resize(size, size)
                scale = 1.0 / self.crop[2]
                model.SetScale(scale)
                model.SetOffset(-scale * self.crop[0], -scale * self.crop[1])
        self.label_overlays = self._hide_overlays() if self.generation == 2 and self.labels is not None else []

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

    def _classify(self, overrides: dict[str, str]) -> None:
        """Kind and region of every drawable, from its part's IDs and the default pose's meshes; sets
        :attr:`ground_truth_problem` where the face lacks what the keypoints need."""
        check_overrides(overrides, f"region overrides for {self.name}")
        if self.generation == 3:
            self.layout = read_moc_layout(self.files.moc)
            if [d.id for d in self.layout] != list(self.model.GetDrawableIds()):
                raise Live2DModelError(f"{str(self.path)!r}: the moc's drawables differ from the loaded model's")
        else:
            self.layout = self._cubism2_layout(overrides)
        self.kinds = [drawable_kind(d, overrides) for d in self.layout]
        self._pose(default_parameters())
        self.gl.bind(self.size)
        self.model.Draw()
        meshes = self._meshes()
        if not any(len(m) for m in meshes):
            raise Live2DModelError(f"{str(self.path)!r}: no drawable is recognisable as part of the face (part IDs: "
                                   f"{', '.join(sorted({p for d in self.layout for p in d.parts}))}); give region overrides")
        eyes = [m for m, k in zip(meshes, self.kinds) if k in ("eye", "iris") and len(m)]
        reference = np.concatenate(eyes if eyes else [m for m in meshes if len(m)])
        midline = (reference[:, 0].min() + reference[:, 0].max()) / 2
        centres = np.array([(m[:, 0].min() + m[:, 0].max()) / 2 if len(m) else midline for m in meshes])
        self.regions = region_names(self.kinds, centres, midline)
        self.ground_truth_problem: str | None = None
        try:
            rig_keypoints(meshes, self.regions, self.kinds)
        except ValueError as exc:
            self.ground_truth_problem = (f"{self.path.name}: {exc} (part IDs: {', '.join(sorted({p for d in self.layout for p in d.parts}))}); "
                                         "frames and parameters are rendered without region maps and keypoints")

    def _cubism2_layout(self, overrides: dict[str, str]) -> list[Drawable]:
        """A Cubism 2 model's drawables with their parts (colour probe) and, for the face's parts, whether they
        show at the default pose (:mod:`datamodules.live2d.cubism2`)."""
        try:
            layout = cubism2_layout(self.model)
        except ValueError as exc:
            raise Live2DModelError(f"{str(self.path)!r}: {exc}") from exc
        drawable_overrides = sorted(set(overrides) & {d.id for d in layout})
        if drawable_overrides:
            raise Live2DModelError(f"{str(self.path)!r} is a Cubism 2 model, whose label colours are per part: region overrides "
                                   f"must name parts ({', '.join(sorted({d.parts[0] for d in layout}))}), not drawables {drawable_overrides}")
        face_parts = list(dict.fromkeys(d.parts[0] for d in layout if drawable_kind(d, overrides) in FACE_KINDS))
        self._pose(default_parameters())
        self.gl.bind(self.size)
        self.model.Draw()
        shown = visible_parts(self.model, self._draw_uncropped, face_parts)
        return [replace(d, visible=d.parts[0] in shown or d.parts[0] not in face_parts) for d in layout]

    def _draw_uncropped(self) -> np.ndarray:
        """The whole model at its current pose, framed to fit every drawable, read back at 1024² (the Cubism 2
        visibility probe; some heads leave the default view)."""
        probe = 1024
        mvp = np.asarray(self.model.GetMvp(), np.float32).reshape(4, 4)
        points = np.concatenate([np.asarray(self.model.GetDrawableVertices(i), np.float32).reshape(-1, 2) for i in range(len(self.model.GetDrawableIds()))])
        points = points @ mvp[:2, :2] + mvp[3, :2]
        centre, half = (points.min(0) + points.max(0)) / 2, float(np.ptp(points, axis=0).max()) / 2 * 1.05
        self.model.Resize(probe, probe)
        self.model.SetScale(1.0 / half)
        self.model.SetOffset(-centre[0] / half, -centre[1] / half)
        self.gl.bind(probe)
        self.model.Draw()
        image = self.gl.read(probe)
        self.model.SetScale(1.0)
        self.model.SetOffset(0.0, 0.0)
        self.model.Resize(self.size, self.size)
        return image

    def _meshes(self) -> list[np.ndarray]:
        """Each drawable's current vertices in normalised device coordinates (x right, y up), ``V×2``; empty
        for drawables outside the face (:data:`FACE_KINDS`), those not shown at the default pose and meshes
        collapsed to a point."""
        mvp = np.asarray(self.model.GetMvp(), np.float32).reshape(4, 4)
        meshes = []
        for index, (drawable, kind) in enumerate(zip(self.layout, self.kinds)):
            shown = drawable.visible and kind in FACE_KINDS
            vertices = np.asarray(self.model.GetDrawableVertices(index), np.float32).reshape(-1, 2) if shown else np.zeros((0, 2), np.float32)
            if len(vertices) and np.ptp(vertices, axis=0).max() == 0.0:
                vertices = vertices[:0]  # a mesh collapsed to one point (Hijiki's D_EAR.17 sits at the canvas corner)
            meshes.append(vertices @ mvp[:2, :2] + mvp[3, :2])
        return meshes

    def _keypoints(self) -> np.ndarray:
        """The 12 keypoints of the drawn pose in crop pixels (``K×2``, x right, y down)."""
        pixels = [np.stack([(m[:, 0] + 1.0) * self.size / 2, (1.0 - m[:, 1]) * self.size / 2], 1) for m in self._meshes()]
        return rig_keypoints(pixels, self.regions, self.kinds)

    def _face_box(self, padding: float) -> tuple[float, float, float]:
        """Centre (x, y) and half side of the head crop in the uncropped view's normalised device coordinates,
        from the face's meshes at the default pose (with room above for hair)."""
        points = np.concatenate(self._meshes())
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        half = padding * max(x1 - x0, y1 - y0) / 2
        return float((x0 + x1) / 2), float((y0 + y1) / 2 + 0.15 * half), float(half)

    def _label_model(self, physics: bool) -> live2d.Model:
        """A second instance of the model drawn in region colours (same parts, pose and physics): Cubism 3 with
        painted textures, Cubism 2 with part colours."""
        if self.generation == 3:
            self._label_dir = tempfile.TemporaryDirectory(prefix=f"live2d-labels-{self.name}-")
            textures = paint_label_textures(self.files.textures, self.layout, self.regions, Path(self._label_dir.name))
            setting = self.files.setting_json(physics, textures)
        else:
            setting = self.files.setting_json(physics)
        labels = live2d.Model()
        labels.LoadFromJsonString(setting, True, "")
        labels.SetAutoBlink(False)
        labels.SetAutoBreath(False)
        if self.generation == 2:
            paint_parts(labels, self.layout, self.regions)
        return labels

    def _hide_overlays(self) -> list[str]:
        """Hide, in the Cubism 2 label twin, the parts outside the face that are drawn over the eyes or the mouth
        at the default pose (translucent shading layers such as Hibiki's ``PARTS_CORE``, which would otherwise
        paint the mouth as body); returns their IDs."""
        self._pose(default_parameters())
        self.gl.bind(self.size)
        self.model.Draw()
        point = dict(zip(KEYPOINT_NAMES, self._keypoints()))
        kind_of = {d.parts[0]: k for d, k in zip(self.layout, self.kinds)}
        parts, hidden = list(self.labels.GetPartIds()), []
        for x, y in (point["left_eye"], point["right_eye"], (point["mouth_top"] + point["mouth_bottom"]) / 2):
            for part in self.model.HitPart(float(x), float(y), False):  # topmost first
                if kind_of.get(part) in ("eye", "iris", "mouth"):
                    break
                if kind_of.get(part, "body") == "body" and part not in hidden:
                    self.labels.SetPartOpacity(parts.index(part), 0.0)
                    hidden.append(part)
        return hidden

    def _pose(self, params: np.ndarray) -> None:
        """Pose the model by ``params`` (raw standard values). They are set and saved before the update, which
        starts from the saved values, so physics follows the pose (set only after it, physics saw the default
        pose and hair never swayed), and set again after it."""
        self.model.ResetAllParameters()
        self._set(params)
        self.model.SaveParameters()
        self.model.Update(_TIME_STEP)
        self._set(params)

    def _set(self, params: np.ndarray) -> None:
        for name, binding in self.bindings.items():
            self.model.SetParamById(binding.model_id, binding.to_model(float(params[PARAMETER_NAMES.index(name)])))

    def _capture(self) -> Live2DFrame:
        """Draw the posed model and its label twin (given the same parameter values) and read both back."""
        self.gl.bind(self.size)
        self.model.Draw()
        image = self.gl.read(self.size)
        if self.labels is None:
            return Live2DFrame(image, None, None)
        keypoints = self._keypoints()
        self.gl.bind(self.size)
        self.labels.Update(_TIME_STEP)
        for index in range(self.model.GetParamCount()):
            self.labels.SetParamByIndex(index, self.model.GetParamValueByIndex(index))
        self.labels.Draw()
        regions = decode_labels(self.gl.read(self.size))
        if self.generation == 2:
            split_sides(regions, keypoints[KEYPOINT_NAMES.index("left_eye")], keypoints[KEYPOINT_NAMES.index("right_eye")])
        return Live2DFrame(image, regions, keypoints)

    def render(self, params: np.ndarray) -> Live2DFrame:
        """The head crop posed by ``params`` (``(P,)`` raw standard values) with its ground truth."""
        params = np.asarray(params, dtype=np.float32)
        if params.shape != (len(PARAMETER_NAMES),):
            raise ValueError(f"expected {len(PARAMETER_NAMES)} standard parameters, got shape {params.shape}")
        self._pose(params)
        return self._capture()

    def render_motion(self, motion: str, fps: float, max_frames: int) -> tuple[list[Live2DFrame], np.ndarray]:
        """Play authored motion ``motion`` (``"Group:index"`` as in the setting file; its curves drive every
        parameter it animates) at ``fps``.

        Returns:
            The frames and the standard parameters read back from the model, ``T×P`` float32 (defaults where the
            model lacks one); ``T`` is the motion's length, at most ``max_frames``.

        Raises:
            Live2DModelError: no such usable motion (the character must be created with ``motions=True``).
        """
        if motion not in self.files.motions:
            problem = self.files.motion_problems.get(motion, f"usable motions: {', '.join(self.files.motions) or 'none'}")
            raise Live2DModelError(f"{str(self.path)!r} has no usable motion {motion!r} ({problem})")
        group, index = self.files.native_motion(motion)
        groups = self.model.GetMotionGroups()
        if not 0 <= index < groups.get(group, 0):
            raise Live2DModelError(f"{str(self.path)!r}: motion {motion!r} is not loaded (motion groups: {groups}; create the character with motions=True)")
        self.model.ResetAllParameters()
        self.model.ResetPose()
        self.model.StopAllMotions()
        self.model.Update(0.0)  # a Cubism 2 model stops all motions on its first update after loading
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
