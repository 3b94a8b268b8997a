"""Training pairs for the MediaPipe-to-canonical adapter (:class:`modules.adapter.LandmarkAdapter`).

A pair is a face's features (:func:`datamodules.face_landmarks.landmark_features`) and the vector that a frozen
descriptor (a :class:`TargetSpace`: the trained animator's, through :class:`modules.adapter_module.AdapterModule`)
gives a Live2D frame in the same pose. Two routes:

* **Live2D renders** (:func:`live2d_pairs`): MediaPipe's Face Landmarker on each frame of rendered clips (its
  presence threshold at 0 finds anime faces) and the descriptor of that same frame. The input comes from the
  anime domain; the pose's rig parameters are known.
* **The shared parameter space** (:func:`human_pairs`): MediaPipe on a human video; each face's geometric reading
  of the standard parameters (head angles, eye aspect ratios, mouth, brows, iris), relative to the video's median
  face (the neutral reference), is rendered on every given Live2D character, and the target is the mean of their
  descriptors (the pose without any one character's identity). The input comes from the human domain.

Everything slow is cached and written atomically: per-clip features beside the clip (``mediapipe_features.npy``),
per-video faces (``<cache>/<video stem>/faces.npz``) and the renders of each video's parameters on each
character (``<cache>/<video stem>/<character>/human``, a clip folder). A cache that no longer matches its source
is recomputed.
"""

from __future__ import annotations

import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from core.errors import UserFacingError
from core.files import atomic_write_bytes
from core.frames import composite, open_frames
from core.vocabulary import FEATURE_DIM, PARAMETER_NAMES, parameters_in_unit_interval
from datamodules.face_landmarks import FaceTracker, face_measures, landmark_features, neutral_measures, parameters_from_measures
from datamodules.live2d.clips import ClipError, ClipInfo, open_arrays, read_clip
from datamodules.live2d.render_process import render_clip, render_pool

FEATURES_FILE = "mediapipe_features.npy"
FACES_FILE = "faces.npz"
HUMAN_CLIP = "human"


class TargetSpace(Protocol):
    """What labels a pair: a frozen descriptor's vector of a frame."""

    @property
    def image_size(self) -> int:
        """The side the frames are described at."""

    def target_vectors(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``B×3×S×S`` in ``[0, 1]`` (``S`` = :attr:`image_size`) → descriptor vectors ``B×D``."""


@dataclass(frozen=True)
class PairSequence:
    """One clip or video, frame by frame.

    Attributes:
        name: ``character/clip`` or the video's file name.
        group: what separates training from validation (the character, or the video's stem).
        features: ``T×F`` face features; NaN rows where no face was found.
        targets: ``T×D`` descriptor vectors (NaN rows where no face was found).
        parameters: ``T×P`` raw standard parameters of the pose (a render's ground truth, or the geometric
            reading of a human face); NaN rows where no face was found.
    """

    name: str
    group: str
    features: torch.Tensor
    targets: torch.Tensor
    parameters: torch.Tensor


def windows(sequence: PairSequence, window: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All length-``window`` runs of frames with a face: inputs ``N×window×F``, the last frame's targets ``N×D``
    and normalised parameters ``N×P`` (``[0, 1]``)."""
    found = ~sequence.features.isnan().any(1)
    ends = [t for t in range(window - 1, len(found)) if found[t - window + 1 : t + 1].all()]
    if not ends:
        return (torch.zeros(0, window, sequence.features.shape[1]), torch.zeros(0, sequence.targets.shape[1]),
                torch.zeros(0, sequence.parameters.shape[1]))
    inputs = torch.stack([sequence.features[t - window + 1 : t + 1] for t in ends])
    parameters = torch.from_numpy(parameters_in_unit_interval(sequence.parameters[ends].numpy()))
    return inputs, sequence.targets[ends], parameters


def _serialised(save, *args, **kwargs) -> bytes:
    """What ``save`` (``np.save``/``np.savez``) writes, as bytes (for :func:`atomic_write_bytes`)."""
    buffer = io.BytesIO()
    save(buffer, *args, **kwargs)
    return buffer.getvalue()


def clip_features(clip: ClipInfo, tracker: FaceTracker, detect_size: int) -> np.ndarray:
    """``T×F`` face features of a clip's frames (composited over white, upscaled to ``detect_size``; NaN rows
    where no face was found), cached in the clip folder."""
    cached = clip.folder / FEATURES_FILE
    if cached.is_file():
        features = np.load(cached)
        if features.shape == (clip.frames, FEATURE_DIM):
            return features
    frames = open_arrays(clip)["frames"]
    features = np.full((clip.frames, FEATURE_DIM), np.nan, np.float32)
    for t in range(clip.frames):
        rgb = composite(np.asarray(frames[t]), (255, 255, 255))
        face = tracker(cv2.resize(rgb, (detect_size, detect_size), interpolation=cv2.INTER_CUBIC))
        if face is not None:
            features[t] = landmark_features(face)
    atomic_write_bytes(cached, _serialised(np.save, features))
    return features


@torch.no_grad()
def clip_targets(space: TargetSpace, clip: ClipInfo) -> torch.Tensor:
    """``T×D`` descriptor vectors of a clip's frames, composited over white at the target space's image size."""
    frames = torch.from_numpy(np.asarray(open_arrays(clip)["frames"], np.float32) / 255.0).permute(0, 3, 1, 2)
    rgb = frames[:, :3] + (1.0 - frames[:, 3:])
    rgb = F.interpolate(rgb, size=(space.image_size, space.image_size), mode="area")
    return torch.cat([space.target_vectors(chunk) for chunk in rgb.split(32)])


def live2d_pairs(space: TargetSpace, clips: list[ClipInfo], tracker: FaceTracker, detect_size: int = 256) -> list[PairSequence]:
    """Route "Live2D renders": one sequence per clip, grouped by character."""
    sequences = []
    for clip in track(clips, description="Live2D clips: face landmarks and descriptor targets"):
        features = torch.from_numpy(clip_features(clip, tracker, detect_size))
        missing = features.isnan().any(1)
        targets = clip_targets(space, clip).masked_fill(missing[:, None], float("nan"))
        parameters = torch.from_numpy(np.array(open_arrays(clip)["params"], np.float32)).masked_fill(missing[:, None], float("nan"))
        sequences.append(PairSequence(f"{clip.character}/{clip.name}", clip.character, features, targets, parameters))
    return sequences


def video_faces(video: Path, landmarker: Path, folder: Path, max_frames: int | None = None) -> tuple[np.ndarray, list[dict[str, float] | None], float]:
    """Face features (``T×F``, NaN without a face), :func:`face_measures` per frame (``None`` without a face) and
    the frame rate of a human video, tracked in VIDEO mode as ``animate`` does; cached in ``folder``."""
    cached = folder / FACES_FILE
    source = f"{video.resolve()}|{video.stat().st_size if video.is_file() else 0}|{max_frames}"
    if cached.is_file():
        with np.load(cached) as data:
            if str(data["source"]) == source:
                names = [str(n) for n in data["names"]]
                measures = [None if np.isnan(row).any() else dict(zip(names, map(float, row))) for row in data["measures"]]
                return data["features"], measures, float(data["fps"])
    stream = open_frames(video, max_frames)
    tracker = FaceTracker(landmarker, video=True, fps=stream.fps)
    features, measures = [], []
    for rgb in track(stream.frames, description=f"faces in {video.name}", total=stream.count):
        face = tracker(rgb)
        features.append(landmark_features(face) if face is not None else np.full(FEATURE_DIM, np.nan, np.float32))
        measures.append(face_measures(face) if face is not None else None)
    tracker.close()
    if not any(m is not None for m in measures):
        raise UserFacingError(f"no face found in any frame of {str(video)!r}")
    names = list(next(m for m in measures if m is not None))
    table = np.array([[m[n] for n in names] if m else [np.nan] * len(names) for m in measures], np.float64)
    atomic_write_bytes(cached, _serialised(np.savez, features=np.stack(features), measures=table, names=np.array(names),
                                           fps=np.array(stream.fps), source=np.array(source)))
    return np.stack(features), measures, stream.fps


def _cached_render(folder: Path, params: np.ndarray, size: int) -> ClipInfo | None:
    """The clip in ``folder`` if it holds exactly these poses at this size, else ``None`` (and it is removed)."""
    if not (folder / "clip.json").is_file():
        return None
    try:
        clip = read_clip(folder)
        if clip.size == size and np.allclose(open_arrays(clip)["params"], params, atol=1e-6):
            return clip
    except ClipError:
        pass
    shutil.rmtree(folder)
    return None


def render_parameters(models: dict[str, Path], params: np.ndarray, root: Path, size: int, fps: float, workers: int = 2) -> list[ClipInfo]:
    """Render the poses ``params`` (``N×P`` raw) on every character of ``models`` (``{Name: model3.json}``) as
    clips ``root/<Name>/human`` (kept when already there with the same poses), in spawned worker processes."""
    clips, missing = [], []
    for character in models:
        cached = _cached_render(root / character / HUMAN_CLIP, params, size)
        if cached:
            clips.append(cached)
        else:
            missing.append(character)
    if missing:
        with render_pool(min(workers, len(missing))) as pool:
            jobs = [pool.submit(render_clip, str(models[c]), str(root),
                                ClipInfo(c, HUMAN_CLIP, "human", 0, fps, size, len(params), PARAMETER_NAMES, ()), False, None, params)
                    for c in missing]
            for job in track(jobs, description=f"rendering {len(params)} poses on {', '.join(missing)}"):
                job.result()
        clips += [read_clip(root / c / HUMAN_CLIP) for c in missing]
    return clips


def human_pairs(space: TargetSpace, video: Path, landmarker: Path, models: dict[str, Path], cache: Path,
                max_frames: int | None = None, workers: int = 2) -> PairSequence:
    """Route "shared parameter space" for one human video (grouped by the video's stem): features of each frame's
    face, its geometric parameters relative to the video's median face, and the mean descriptor of those
    parameters rendered on every character in ``models``."""
    folder = cache / video.stem
    features, measures, fps = video_faces(video, landmarker, folder, max_frames)
    found = [t for t, m in enumerate(measures) if m is not None]
    neutral = neutral_measures([measures[t] for t in found])
    poses = np.stack([parameters_from_measures(measures[t], neutral) for t in found])
    renders = render_parameters(models, poses, folder, space.image_size, fps, workers)
    mean_target = torch.stack([clip_targets(space, clip) for clip in renders]).mean(0)
    targets = torch.full((len(measures), mean_target.shape[1]), float("nan"))
    parameters = torch.full((len(measures), poses.shape[1]), float("nan"))
    targets[found], parameters[found] = mean_target, torch.from_numpy(poses)
    return PairSequence(video.name, video.stem, torch.from_numpy(features), targets, parameters)
