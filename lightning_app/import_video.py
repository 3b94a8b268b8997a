"""Import plain footage as clips: ``python -m lightning_app.import_video --input VIDEO.mp4|FRAMES_DIR --character NAME --out data/live2d``.

Recorded Live2D (or other anime) footage without ground truth becomes a clip in the format of
:mod:`datamodules.live2d.clips`: frames are centre-cropped to a square (or to ``--box``), resized to ``--size``
and stored opaque; the parameters are NaN (unknown) and the clip's source is ``video``. The clip DataModule
then uses it for self-reenactment pairs like any other clip of that character.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from core.errors import UserFacingError, exit_on_user_error
from core.frames import open_frames
from core.vocabulary import PARAMETER_NAMES
from datamodules.live2d.clips import ClipInfo, write_clip

def read_frames(source: Path, max_frames: int) -> tuple[list[np.ndarray], float]:
    """RGB frames (``H×W×3`` uint8) and the frame rate of a video file or a folder of images (30 fps assumed)."""
    stream = open_frames(source, max_frames)
    frames = list(stream.frames)
    if not frames:
        raise UserFacingError(f"{str(source)!r} is not a readable video (no frame decoded)")
    if len({f.shape for f in frames}) > 1:
        raise UserFacingError(f"images in {str(source)!r} differ in size; expected one size for a clip")
    return frames, stream.fps


def square_crop(frames: list[np.ndarray], size: int, box: tuple[int, int, int] | None) -> np.ndarray:
    """``T×size×size×4`` uint8 RGBA (opaque) from the square ``box`` = (x, y, side), or the centred square."""
    height, width = frames[0].shape[:2]
    x, y, side = box if box is not None else ((width - min(height, width)) // 2, (height - min(height, width)) // 2, min(height, width))
    if side < 1 or x < 0 or y < 0 or x + side > width or y + side > height:
        raise UserFacingError(f"--box {x} {y} {side} does not fit in the {width}×{height} frames")
    out = np.empty((len(frames), size, size, 4), np.uint8)
    for i, frame in enumerate(frames):
        out[i, ..., :3] = cv2.resize(frame[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    out[..., 3] = 255
    return out


def import_clip(source: Path, out: Path, character: str, size: int = 256, name: str | None = None,
                box: tuple[int, int, int] | None = None, max_frames: int = 10_000) -> Path:
    """Write ``source`` (video or image folder) as clip ``out/<character>/<name>``; returns its folder."""
    frames, fps = read_frames(source, max_frames)
    rgba = square_crop(frames, size, box)
    params = np.full((len(rgba), len(PARAMETER_NAMES)), np.nan, np.float32)
    clip_name = name or f"video_{source.stem}"
    info = ClipInfo(character, clip_name, "video", 0, fps, size, len(rgba), PARAMETER_NAMES, PARAMETER_NAMES)
    return write_clip(out, info, {"frames": rgba, "params": params})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="video file (mp4, ...) or folder of frame images")
    parser.add_argument("--character", required=True, help="character name (its folder in the dataset)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--name", help="clip name (default: video_<input stem>)")
    parser.add_argument("--box", type=int, nargs=3, metavar=("X", "Y", "SIDE"), help="square crop in source pixels")
    parser.add_argument("--max-frames", type=int, default=10_000)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        folder = import_clip(args.input, args.out, args.character, args.size, args.name, tuple(args.box) if args.box else None, args.max_frames)
    print(f"wrote {folder}")


if __name__ == "__main__":
    main()
