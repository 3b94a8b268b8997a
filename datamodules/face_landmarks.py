"""Human (or anime) face landmarks from MediaPipe's Face Landmarker, normalised for the adapter, and the Live2D
standard parameters they imply.

MediaPipe ``mediapipe==1.2.3`` (Tasks API; it coexists with numpy 2 and the one OpenCV distribution this project
declares, ``opencv-contrib-python``, which mediapipe itself depends on). The model bundle is a file
(``face_landmarker.task``, from MediaPipe's model page), given by path. The landmarker is created lazily in the
process that uses it (it must not cross a ``fork``).

Per frame: 478 landmarks (x, y in image pixels, z in the same scale), 52 blendshape scores and the 4×4 facial
transformation matrix; ``None`` when no face is found.

Normalisation (:func:`landmark_features`): landmarks are centred on the midpoint between the eyes, rotated so the
eye line is horizontal and scaled by the inter-ocular distance; head pose (yaw, pitch, roll from the matrix, in
units of 90°) and the blendshapes are kept as separate inputs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import UserFacingError
from core.vocabulary import PARAMETER_INDEX, default_parameters, parameter_bounds

# Face Mesh indices (the person's right/left; in a non-mirrored image the person's right eye is on the image's left).
RIGHT_EYE = {"outer": 33, "inner": 133, "top": 159, "bottom": 145, "iris": 468}
LEFT_EYE = {"outer": 263, "inner": 362, "top": 386, "bottom": 374, "iris": 473}
MOUTH = {"top": 13, "bottom": 14, "right": 61, "left": 291}
BROWS = {"right": 105, "left": 334}


@dataclass(frozen=True)
class FaceObservation:
    """One frame's face.

    Attributes:
        landmarks: ``478×3`` float32 (x, y in pixels, z in the x scale).
        blendshapes: ``52`` float32 scores in ``[0, 1]`` (MediaPipe's order, ``_neutral`` first).
        matrix: ``4×4`` float32 facial transformation matrix (canonical face → camera).
    """

    landmarks: np.ndarray
    blendshapes: np.ndarray
    matrix: np.ndarray


@contextlib.contextmanager
def _quiet_stderr():
    """MediaPipe's C++ side prints several log lines per landmarker on fd 2; environment variables do not
    silence them, redirecting the descriptor does."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class FaceTracker:
    """MediaPipe Face Landmarker over a stream of RGB frames.

    Args:
        model_path: the ``face_landmarker.task`` bundle.
        video: ``True`` tracks across frames (VIDEO mode, strictly increasing timestamps); ``False`` treats every
            frame independently (IMAGE mode, deterministic).
        min_detection: minimum face detection confidence.
        min_presence: minimum face presence confidence (0 finds anime faces in Live2D renders).
        fps: frame rate used for VIDEO timestamps.

    Raises:
        UserFacingError: the bundle is missing or not a bundle, or mediapipe is not installed.
    """

    def __init__(self, model_path: str | Path, video: bool = False, min_detection: float = 0.5, min_presence: float = 0.5, fps: float = 30.0) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise UserFacingError(f"MediaPipe face landmarker bundle {str(self.model_path)!r} does not exist "
                                  "(get face_landmarker.task from MediaPipe's Face Landmarker model page)")
        if not zipfile.is_zipfile(self.model_path):
            raise UserFacingError(f"{str(self.model_path)!r} is not a MediaPipe .task bundle (a zip archive such as face_landmarker.task)")
        self.video, self.min_detection, self.min_presence, self.fps = video, min_detection, min_presence, fps
        self._landmarker = None
        self._frame = 0

    def _create(self):
        # Measured here: with mediapipe 1.2.3 loaded, a SIGPROF sometimes reaches the process later (in a pytest run
        # that also trains and spawns renderers) and its default action ends the process ("Profiling timer expired").
        # Ignore it unless someone (a sampling profiler) handles it already.
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGPROF) == signal.SIG_DFL:
            signal.signal(signal.SIGPROF, signal.SIG_IGN)
        try:
            from mediapipe.tasks.python import BaseOptions, vision
        except ImportError as exc:
            raise UserFacingError("mediapipe is not installed (pip install mediapipe==1.2.3)") from exc
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(self.model_path)),
            running_mode=vision.RunningMode.VIDEO if self.video else vision.RunningMode.IMAGE,
            num_faces=1, min_face_detection_confidence=self.min_detection, min_face_presence_confidence=self.min_presence,
            min_tracking_confidence=0.5, output_face_blendshapes=True, output_facial_transformation_matrixes=True,
        )
        with _quiet_stderr():
            return vision.FaceLandmarker.create_from_options(options)

    def __call__(self, rgb: np.ndarray) -> FaceObservation | None:
        """The face in ``rgb`` (``H×W×3`` uint8), or ``None``."""
        import mediapipe as mp

        if self._landmarker is None:
            self._landmarker = self._create()
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        with _quiet_stderr():
            if self.video:
                result = self._landmarker.detect_for_video(image, int(self._frame * 1000 / self.fps))
            else:
                result = self._landmarker.detect(image)
        self._frame += 1
        if not result.face_landmarks:
            return None
        height, width = rgb.shape[:2]
        points = np.array([[p.x * width, p.y * height, p.z * width] for p in result.face_landmarks[0]], np.float32)
        blendshapes = np.array([c.score for c in result.face_blendshapes[0]], np.float32)
        return FaceObservation(points, blendshapes, np.asarray(result.facial_transformation_matrixes[0], np.float32))

    def close(self) -> None:
        if self._landmarker is not None:
            self._landmarker.close()
            self._landmarker = None


def head_pose(matrix: np.ndarray) -> np.ndarray:
    """Yaw, pitch, roll in degrees from a facial transformation matrix (rotation part, canonical → camera)."""
    rotation = matrix[:3, :3] / np.linalg.norm(matrix[:3, 0])
    yaw = np.degrees(np.arctan2(rotation[0, 2], rotation[2, 2]))
    pitch = np.degrees(np.arcsin(np.clip(-rotation[1, 2], -1.0, 1.0)))
    roll = np.degrees(np.arctan2(rotation[1, 0], rotation[0, 0]))
    return np.array([yaw, pitch, roll], np.float32)


def _eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    right = (landmarks[RIGHT_EYE["outer"], :2] + landmarks[RIGHT_EYE["inner"], :2]) / 2
    left = (landmarks[LEFT_EYE["outer"], :2] + landmarks[LEFT_EYE["inner"], :2]) / 2
    return right, left


def normalised_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """``478×3`` landmarks centred between the eyes, eye line horizontal, inter-ocular distance 1."""
    right, left = _eye_centres(landmarks)
    centre, axis = (right + left) / 2, left - right
    distance = max(float(np.linalg.norm(axis)), 1e-6)
    cos, sin = axis / distance
    rotation = np.array([[cos, sin], [-sin, cos]], np.float32)
    xy = (landmarks[:, :2] - centre) @ rotation.T
    return np.concatenate([xy, landmarks[:, 2:3]], axis=1).astype(np.float32) / distance


def landmark_features(face: FaceObservation) -> np.ndarray:
    """The adapter's input for one face: ``core.vocabulary.FEATURE_DIM`` float32 (normalised landmarks, blendshapes, head pose / 90°)."""
    return np.concatenate([normalised_landmarks(face.landmarks).ravel(), face.blendshapes, head_pose(face.matrix) / 90.0]).astype(np.float32)


def face_measures(face: FaceObservation) -> dict[str, float]:
    """Geometric measures a rig parameter corresponds to: head angles (degrees), eye aspect ratios, mouth
    opening and width, brow heights (in inter-ocular distances) and iris offsets (in half eye widths)."""
    points = normalised_landmarks(face.landmarks)[:, :2]
    yaw, pitch, roll = head_pose(face.matrix)

    def eye(spec: dict[str, int]) -> tuple[float, float, float]:
        width = np.linalg.norm(points[spec["outer"]] - points[spec["inner"]])
        aspect = np.linalg.norm(points[spec["top"]] - points[spec["bottom"]]) / max(width, 1e-6)
        middle = (points[spec["outer"]] + points[spec["inner"]]) / 2
        iris = (points[spec["iris"]] - middle) / max(width / 2, 1e-6)
        return float(aspect), float(iris[0]), float(iris[1])

    right_aspect, right_x, right_y = eye(RIGHT_EYE)
    left_aspect, left_x, left_y = eye(LEFT_EYE)
    return {
        "yaw": float(yaw), "pitch": float(pitch), "roll": float(roll),
        "eye_right": right_aspect, "eye_left": left_aspect,
        "iris_x": (right_x + left_x) / 2, "iris_y": (right_y + left_y) / 2,
        "mouth_open": float(np.linalg.norm(points[MOUTH["top"]] - points[MOUTH["bottom"]])),
        "mouth_width": float(np.linalg.norm(points[MOUTH["left"]] - points[MOUTH["right"]])),
        "brow_right": float(-points[BROWS["right"], 1]), "brow_left": float(-points[BROWS["left"], 1]),
    }


def neutral_measures(measures: list[dict[str, float]]) -> dict[str, float]:
    """A person's resting face from many frames: the median of each measure (robust to the moments they move)."""
    if not measures:
        raise ValueError("a neutral reference needs at least one face")
    return {name: float(np.median([m[name] for m in measures])) for name in measures[0]}


def geometric_parameters(face: FaceObservation, neutral: dict[str, float]) -> np.ndarray:
    """The standard parameters (``P`` raw values) implied by a face, relative to the same person's ``neutral``
    measures (:func:`face_measures` of a resting face, or :func:`neutral_measures` of a video), so a resting face
    maps to the neutral pose. See :func:`parameters_from_measures`."""
    return parameters_from_measures(face_measures(face), neutral)


def parameters_from_measures(now: dict[str, float], neutral: dict[str, float]) -> np.ndarray:
    """The standard parameters (``P`` raw values, clipped to their ranges) for a face's :func:`face_measures`
    relative to ``neutral``.

    The person's left eye drives ``ParamEyeLOpen`` (the character's left eye); angles follow Live2D's signs
    (``ParamAngleX`` > 0 turns toward the image's right).
    """
    params = default_parameters()
    low, high = parameter_bounds()

    def put(name: str, value: float) -> None:
        i = PARAMETER_INDEX[name]
        params[i] = np.clip(value, low[i], high[i])

    put("ParamAngleX", now["yaw"] - neutral["yaw"])
    put("ParamAngleY", -(now["pitch"] - neutral["pitch"]))
    put("ParamAngleZ", -(now["roll"] - neutral["roll"]))
    put("ParamEyeLOpen", now["eye_left"] / max(neutral["eye_left"], 1e-3))
    put("ParamEyeROpen", now["eye_right"] / max(neutral["eye_right"], 1e-3))
    put("ParamEyeBallX", (now["iris_x"] - neutral["iris_x"]) * 2.0)
    put("ParamEyeBallY", -(now["iris_y"] - neutral["iris_y"]) * 2.0)
    put("ParamBrowLY", (now["brow_left"] - neutral["brow_left"]) * 5.0)
    put("ParamBrowRY", (now["brow_right"] - neutral["brow_right"]) * 5.0)
    put("ParamMouthOpenY", (now["mouth_open"] - neutral["mouth_open"]) * 2.5)
    put("ParamMouthForm", (now["mouth_width"] - neutral["mouth_width"]) * 4.0)
    return params
