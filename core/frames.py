"""Frames as RGB arrays: read from a video file, a folder of images or a webcam, and composited from RGBA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from core.errors import UserFacingError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass
class FrameStream:
    """RGB ``H×W×3`` uint8 frames with the source's frame rate and frame count (``None`` when unknown, e.g. a
    webcam)."""

    frames: Iterator[np.ndarray]
    fps: float
    count: int | None


def _capture_frames(capture: cv2.VideoCapture, max_frames: int | None) -> Iterator[np.ndarray]:
    produced = 0
    while max_frames is None or produced < max_frames:
        ok, image = capture.read()
        if not ok:
            break
        produced += 1
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    capture.release()


def _image_frames(files: list[Path]) -> Iterator[np.ndarray]:
    for file in files:
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise UserFacingError(f"{str(file)!r} is not a readable image")
        yield cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def open_frames(source: str | Path, max_frames: int | None = None) -> FrameStream:
    """Frames of ``source``: a webcam index (``"0"``), a folder of images (sorted by name, 30 fps assumed) or a
    video file.

    Raises:
        UserFacingError: no camera at that index, an empty folder, or a missing or unreadable video.
    """
    text = str(source)
    if text.isdigit():
        capture = cv2.VideoCapture(int(text))
        if not capture.isOpened():
            raise UserFacingError(f"no camera at index {text}: webcam mode needs a camera; give a video file instead")
        return FrameStream(_capture_frames(capture, max_frames), capture.get(cv2.CAP_PROP_FPS) or 30.0, max_frames)
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:max_frames]
        if not files:
            raise UserFacingError(f"{text!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        return FrameStream(_image_frames(files), 30.0, len(files))
    if not path.is_file():
        raise UserFacingError(f"{text!r} does not exist")
    capture = cv2.VideoCapture(text)
    if not capture.isOpened():
        raise UserFacingError(f"{text!r} is not a readable video")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    count = min(total, max_frames) if total and max_frames else (total or max_frames)
    return FrameStream(_capture_frames(capture, max_frames), float(capture.get(cv2.CAP_PROP_FPS) or 30.0), count)


def composite(rgba: np.ndarray, background: tuple[int, int, int] | np.ndarray, premultiplied: bool = True,
              rounded: bool = True) -> np.ndarray:
    """``H×W×4`` RGBA (uint8 or float, ``0…255``) over a solid ``background`` RGB colour → ``H×W×3`` RGB.

    Args:
        premultiplied: colour channels already multiplied by alpha (the renderer's frames); ``False`` for straight
            alpha (a PNG file as OpenCV reads it).
        rounded: uint8 out (rounded); ``False``: float32 in ``0…255``, unrounded (to resize before rounding).
    """
    alpha = rgba[..., 3:].astype(np.float32) / 255.0
    colour = rgba[..., :3].astype(np.float32)
    rgb = (colour if premultiplied else colour * alpha) + (1.0 - alpha) * np.asarray(background, np.float32)
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8) if rounded else rgb
