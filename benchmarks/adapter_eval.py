"""How well does a human drive the portrait? The adapter's motion vs the geometric reading of the human face.

    python benchmarks/adapter_eval.py --checkpoint ANIMATOR_WITH_ADAPTER.ckpt --evaluator EVALUATOR.ckpt \
        --landmarker ../shared/mediapipe/face_landmarker.task --portrait portrait.png --videos ../shared/driving/*.mp4

For every human driving video: MediaPipe → adapter → animator (relative motion), and per frame

* the **geometric estimate** of the rig parameters from the human face (head angles, eye aspect ratios, mouth,
  relative to the first frame; :func:`datamodules.face_landmarks.geometric_parameters`), and
* the **parameters the animation shows**: the evaluator's parameter regressor on the animated frame, relative to
  the animation's first frame.

It prints their correlation per parameter (does the portrait follow the human?), the output's temporal jitter
(mean frame-to-frame motion of the evaluator's keypoints on the animated frames, pixels, and the same on a
median-smoothed track: the part of the motion that is jitter) and the animation frames/s, as a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.checkpoint_files import expect_checkpoint_kind  # noqa: E402
from core.frames import open_frames  # noqa: E402
from core.vocabulary import PARAMETER_INDEX  # noqa: E402
from datamodules.face_landmarks import face_measures, geometric_parameters  # noqa: E402
from lightning_app.animate import Animation, HumanMotion, read_portrait  # noqa: E402
from modules.adapter_metrics import COMPARED, correlation  # noqa: E402
from modules.animator_checkpoint import load_animator  # noqa: E402
from modules.evaluator import EvaluatorModule  # noqa: E402

@torch.no_grad()
def evaluate_video(animator, evaluator: EvaluatorModule, landmarker: Path, portrait: torch.Tensor, video: Path, max_frames: int) -> dict[str, float]:
    stream = open_frames(video, max_frames)
    human = HumanMotion(animator, landmarker, stream.fps)
    animation = Animation(animator, portrait, human, relative=True)
    geometric, shown, keypoints, neutral = [], [], [], None
    start = time.perf_counter()
    for rgb in stream.frames:
        image = animation(rgb)
        if image is None or human.last_face is None:
            continue
        neutral = neutral or face_measures(human.last_face)
        geometric.append(geometric_parameters(human.last_face, neutral))
        out = evaluator(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0)
        shown.append((out["parameters"][0] * evaluator.param_span + evaluator.param_default).numpy())
        keypoints.append(out["keypoints"][0].numpy())
    elapsed = time.perf_counter() - start
    human.tracker.close()
    geometric_array, shown_array, track = torch.from_numpy(np.array(geometric)), torch.from_numpy(np.array(shown)), np.array(keypoints)
    row = {f"r_{name.removeprefix('Param')}": correlation(geometric_array[:, PARAMETER_INDEX[name]], shown_array[:, PARAMETER_INDEX[name]]) for name in COMPARED}
    padded = np.pad(track, ((2, 2), (0, 0), (0, 0)), mode="edge")
    smooth = np.median(np.stack([padded[i : i + len(track)] for i in range(5)]), axis=0)  # 5-frame running median
    row["jitter_px"] = float(np.linalg.norm(np.diff(track, axis=0), axis=-1).mean())
    row["jitter_residual_px"] = float(np.linalg.norm(track - smooth, axis=-1).mean())
    row["frames"], row["fps"] = float(len(track)), len(track) / max(elapsed, 1e-9)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--evaluator", type=Path, required=True)
    parser.add_argument("--landmarker", type=Path, required=True)
    parser.add_argument("--portrait", type=Path, required=True)
    parser.add_argument("--videos", type=Path, nargs="+", required=True)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--max-frames", type=int, default=150)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    animator = load_animator(args.checkpoint).eval()
    expect_checkpoint_kind(args.evaluator, "evaluator", "--evaluator")
    evaluator = EvaluatorModule.load_from_checkpoint(args.evaluator, map_location="cpu").eval()
    portrait = read_portrait(args.portrait, args.size)
    rows = {video.name: evaluate_video(animator, evaluator, args.landmarker, portrait, video, args.max_frames) for video in args.videos}
    columns = list(next(iter(rows.values())))
    table = Table(title="human driving: correlation of the animation's parameters (evaluator) with the face's geometric reading; output jitter")
    table.add_column("video")
    for column in columns:
        table.add_column(column, justify="right")
    for video, row in rows.items():
        table.add_row(video, *(f"{row[c]:.2f}" for c in columns))
    Console(width=220).print(table)


if __name__ == "__main__":
    main()
