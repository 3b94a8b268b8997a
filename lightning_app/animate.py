"""Animate a portrait: ``python -m lightning_app.animate --checkpoint CKPT --portrait PORTRAIT.png --driving VIDEO.mp4 --out OUT.mp4``.

The driving motion comes from

* a **human** video or webcam (``--driving 0``): MediaPipe's Face Landmarker → the checkpoint's adapter → the
  animator's descriptor space (needs a checkpoint from ``python -m lightning_app.train_adapter`` and
  ``--landmarker face_landmarker.task``). An animator whose descriptor reads the standard rig parameters
  (``configs/rig.yaml``) needs no adapter: the face's geometric reading of those parameters (head angles, eye
  and mouth opening, brows, gaze; relative to the median of its first ``--neutral-frames`` faces) drives it
  directly (``--driver human``). Frames without a face hold the last seen motion;
* an **anime** video or folder of frames: the animator's own descriptor reads it directly.

``--driver auto`` picks human when the checkpoint has an adapter. Motion is transferred **relative** to the
driving's neutral pose (default: the change since then is applied to the portrait, so a resting face keeps the
portrait's pose; for a human the median over the first ``--neutral-frames`` faces, for anime frames the first
frame) or **absolute** (``--absolute``). Writes an mp4 (atomically), optionally side by side
(driving | portrait | result), shows progress and reports frames/s. A webcam run stops after ``--max-frames``
or on ``q`` in the preview window (``--show``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import deque
from pathlib import Path

import cv2
import numpy as np
import torch
from rich.progress import Progress

from core.errors import UserFacingError, exit_on_user_error
from core.files import atomic_video, check_folder_path
from core.frames import composite, open_frames
from core.vocabulary import default_parameters
from datamodules.face_landmarks import FaceObservation, FaceTracker, face_measures, landmark_features, neutral_measures, parameters_from_measures
from modules.animator_checkpoint import load_animator
from modules.animator_module import AnimatorModule, PreparedReference
from modules.descriptors.base import Motion
from modules.descriptors.rig import normalise_rig_parameters


SMALL_PORTRAIT = 0.25  # a portrait's shorter side below this fraction of the model size is warned about


def read_portrait(path: Path, size: int) -> torch.Tensor:
    """``1×3×size×size`` in ``[0, 1]`` from an image file (centre square; transparency over white); warns when the
    image is far smaller than ``size`` (upscaled, it carries little of the face)."""
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserFacingError(f"cannot read the portrait image {str(path)!r} (missing, or not an image OpenCV reads)")
    if min(image.shape[:2]) < SMALL_PORTRAIT * size:
        warnings.warn(f"the portrait {str(path)!r} is {image.shape[1]}×{image.shape[0]} pixels, far below the model's {size}²: "
                      "it is upscaled and the animation will be blurred", stacklevel=2)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        image = composite(image, (255, 255, 255), premultiplied=False)
    return to_tensor(square(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), size))


def square(rgb: np.ndarray, size: int) -> np.ndarray:
    """The centred square of an ``H×W×3`` image, resized to ``size``."""
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return cv2.resize(rgb[top : top + side, left : left + side], (size, size), interpolation=cv2.INTER_AREA)


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0


class HumanMotion:
    """Human frames → the descriptor's motion; faceless frames hold the last.

    Through the animator's adapter (MediaPipe features → descriptor space), or, for a descriptor whose vector is
    the standard rig parameters and no adapter, through the face's geometric reading of those parameters
    (:func:`~datamodules.face_landmarks.parameters_from_measures`) relative to the median of the first faces.

    Args:
        animator: an animator with an adapter, or one whose descriptor has ``vector_is_parameters``.
        landmarker: MediaPipe's ``face_landmarker.task``.
        fps: the frame rate (VIDEO-mode timestamps).
        neutral_frames: the neutral reference (:meth:`reference`) is the median adapter output (or face measures)
            over the first this many frames with a face, so a blink or a glance in one frame does not become the
            rest pose.
    """

    def __init__(self, animator: AnimatorModule, landmarker: Path, fps: float, neutral_frames: int = 15) -> None:
        self.geometric = animator.adapter is None and animator.descriptor.vector_is_parameters
        if animator.adapter is None and not self.geometric:
            raise UserFacingError("this checkpoint has no adapter, so a human cannot drive it; train one with python -m lightning_app.train_adapter fit --config configs/adapter/human.yaml "
                                  "and give its run's animator.ckpt "
                                  "(or use an animator whose descriptor reads rig parameters, configs/rig.yaml)")
        if neutral_frames < 1:
            raise UserFacingError(f"--neutral-frames must be at least 1, got {neutral_frames}")
        self.animator, self.adapter = animator, animator.adapter
        self.tracker = FaceTracker(landmarker, video=True, fps=fps)
        self.window: deque[np.ndarray] = deque(maxlen=getattr(self.adapter, "temporal_window", 1))
        self.neutral_frames = neutral_frames
        self.calibration: list[torch.Tensor] = []
        self.neutral_faces: list[dict[str, float]] = []
        self.last_vector: torch.Tensor | None = None
        self.faces = 0
        self.last_face: FaceObservation | None = None

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> Motion | None:
        face = self.tracker(rgb)
        if face is not None:
            self.faces += 1
            self.last_face = face
        if self.geometric:
            if face is not None:
                measures = face_measures(face)
                if len(self.neutral_faces) < self.neutral_frames:
                    self.neutral_faces.append(measures)
                params = parameters_from_measures(measures, neutral_measures(self.neutral_faces))
                self.last_vector = normalise_rig_parameters(torch.from_numpy(params))[None]
            return None if self.last_vector is None else self.animator.motion_from_vector(self.last_vector)
        if face is not None:
            self.window.append(landmark_features(face))
        if not self.window:
            return None
        vector = self.adapter(torch.from_numpy(np.stack(list(self.window)))[None])[:, -1]
        if face is not None and len(self.calibration) < self.neutral_frames:
            self.calibration.append(vector)
        return self.animator.motion_from_vector(vector)

    def reference(self) -> Motion:
        """The neutral pose: the median adapter output over the calibration frames seen so far; for the geometric
        reading the neutral parameters (the measures are already relative to the median face)."""
        if self.geometric:
            return self.animator.motion_from_vector(normalise_rig_parameters(torch.from_numpy(default_parameters()))[None])
        return self.animator.motion_from_vector(torch.cat(self.calibration).median(0).values[None])


class Animation:
    """Frame-by-frame animation of one portrait.

    Args:
        animator: the trained animator.
        portrait: ``1×3×S×S`` in ``[0, 1]``.
        human: a :class:`HumanMotion` (human driving), or ``None`` (the descriptor reads the driving frames).
        relative: transfer the change since the driving's neutral pose (a human's :meth:`HumanMotion.reference`,
            else the first driving frame) instead of the absolute motion, scaled to the portrait's keypoint spread
            when the animator has ``adapt_movement_scale``.
    """

    def __init__(self, animator: AnimatorModule, portrait: torch.Tensor, human: HumanMotion | None, relative: bool) -> None:
        self.animator, self.human, self.relative = animator, human, relative
        with torch.no_grad():
            self.portrait = animator.prepare(portrait)
        self.first: PreparedReference | None = None  # the first driving frame, read once
        self.unregistered = 0  # driving frames ECC could not align (their registration keypoints stayed still)

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """The animated portrait (``S×S×3`` uint8) for a driving frame ``H×W×3``; ``None`` until motion is known."""
        size = self.portrait.image.shape[-1]
        if self.human:
            motion = self.human(rgb)
            if motion is None:
                return None
            result = self.animator.animate_motion(self.portrait, motion, self.human.reference() if self.relative else None)
        else:
            frame = to_tensor(square(rgb, size))
            if self.first is None and self.relative:
                self.first = self.animator.prepare_reference(frame)
            result = self.animator.animate_frame(self.portrait, frame, self.first)
            if self.animator.registration and self.animator.last_registration_rate < 1.0:
                self.unregistered += 1
        return (result[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def animate(checkpoint: Path, portrait: Path, driving: str, out: Path, driver: str = "auto", relative: bool = True, size: int | None = None,
            side_by_side: bool = False, landmarker: Path | None = None, max_frames: int | None = None, show: bool = False,
            neutral_frames: int = 15) -> dict[str, float]:
    """Write the animation; returns ``frames``, ``fps`` (animation frames per second of wall time), ``faces`` and
    ``unregistered`` (driving frames where ECC could not align a registration window, for an animator with
    ``registration``: those frames keep that window still)."""
    check_folder_path(Path(out).parent, "--out's folder")
    animator = load_animator(checkpoint).eval()
    size = size or animator.image_size
    source = read_portrait(portrait, size)
    human = driver == "human" or (driver == "auto" and animator.adapter is not None)
    if human and landmarker is None:
        raise UserFacingError("human driving needs --landmarker face_landmarker.task (MediaPipe's Face Landmarker bundle)")
    if human and animator.adapter is None and animator.descriptor.spec.num_keypoints and not relative:
        raise UserFacingError("--absolute: rig parameters read from a face do not say where the portrait's landmarks go; drive it relatively (drop --absolute)")
    stream = open_frames(driving, max_frames)
    frames, fps, count = stream.frames, stream.fps, stream.count
    human_motion = HumanMotion(animator, landmarker, fps, neutral_frames) if human else None  # type: ignore[arg-type]
    animation = Animation(animator, source, human_motion, relative)
    written, start = 0, time.perf_counter()
    width = size * (3 if side_by_side else 1)
    with atomic_video(out, fps, width, size) as write, Progress() as progress:
        task = progress.add_task(f"animating {Path(driving).name if not driving.isdigit() else 'webcam ' + driving}", total=count)
        pending = 0  # frames before the first face: written once motion is known
        for rgb in frames:
            image = animation(rgb)
            if image is None:
                pending += 1
                progress.advance(task)
                continue
            if side_by_side:
                image = np.concatenate([square(rgb, size), (source[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), image], axis=1)
            for _ in range(pending + 1):
                write(image)
            written += pending + 1
            pending = 0
            progress.advance(task)
            if show:
                cv2.imshow("animate (q quits)", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
        if human_motion:
            human_motion.tracker.close()
        if written == 0:
            raise UserFacingError(f"no face found in any frame of {driving!r}" if human else f"no frames in {driving!r}")
    elapsed = time.perf_counter() - start
    return {"frames": float(written), "fps": written / max(elapsed, 1e-9), "faces": float(human_motion.faces if human_motion else written),
            "unregistered": float(animation.unregistered)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="AnimatorModule checkpoint (with an adapter for human driving)")
    parser.add_argument("--portrait", type=Path, required=True, help="the portrait image")
    parser.add_argument("--driving", required=True, help="video file, folder of frames, or a webcam index (0)")
    parser.add_argument("--out", type=Path, required=True, help="output mp4")
    parser.add_argument("--driver", choices=["auto", "anime", "human"], default="auto")
    parser.add_argument("--absolute", action="store_true", help="absolute motion instead of the change since the first frame")
    parser.add_argument("--size", type=int, help="output size (default: the animator's training size)")
    parser.add_argument("--side-by-side", action="store_true", help="write driving | portrait | result")
    parser.add_argument("--landmarker", type=Path, help="MediaPipe face_landmarker.task (human driving)")
    parser.add_argument("--max-frames", type=int)
    parser.add_argument("--show", action="store_true", help="preview window (q quits)")
    parser.add_argument("--neutral-frames", type=int, default=15, help="human driving: the rest pose is the median over the first N frames with a face")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        report = animate(args.checkpoint, args.portrait, args.driving, args.out, args.driver, not args.absolute, args.size,
                         args.side_by_side, args.landmarker, args.max_frames, args.show, args.neutral_frames)
    print(f"wrote {args.out}: {report['frames']:.0f} frames at {report['fps']:.1f} frames/s"
          + (f", face found in {report['faces']:.0f}" if args.driver != "anime" else "")
          + (f"; ECC could not align {report['unregistered']:.0f} driving frames with their reference, which kept their "
             "registration keypoints still" if report["unregistered"] else ""))


if __name__ == "__main__":
    main()
