"""Train the MediaPipe-to-canonical adapter of a trained animator:
``python -m lightning_app.train_adapter --animator CKPT --clips data/live2d --landmarker face_landmarker.task --out CKPT``.

Training pairs come from rendered Live2D clips (route "MediaPipe on Live2D renders"): MediaPipe's Face Landmarker
(presence threshold lowered, so it finds anime faces) gives face features of each frame, and the animator's frozen
descriptor gives the target vector of the same frame. Features are cached per clip (``mediapipe_features.npy``,
written atomically; frames without a face are NaN and skipped). Clips of the ``--held-out`` characters are kept
for validation.

Losses: regression (smooth L1 on standardised descriptor vectors) and InfoNCE across the batch (each prediction
must be closest to its own target). The animator is written to ``--out`` with the adapter in its ``adapter``
slot, ready for ``python -m lightning_app.animate``.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import track

from datamodules.face_landmarks import FEATURE_DIM, FaceTracker, landmark_features
from datamodules.live2d.clips import ClipInfo, index_clips, open_arrays
from lightning_app.files import atomic_write_bytes
from modules.adapter import LandmarkAdapter
from modules.animator_module import AnimatorModule
from modules.errors import UserFacingError, exit_on_user_error
from lightning_app.checkpoints import load_animator, save_animator

FEATURES_FILE = "mediapipe_features.npy"


def clip_features(clip: ClipInfo, tracker: FaceTracker, detect_size: int) -> np.ndarray:
    """``T×F`` face features of a clip's frames (NaN rows where no face was found), cached in the clip folder."""
    cached = clip.folder / FEATURES_FILE
    if cached.is_file():
        features = np.load(cached)
        if features.shape == (clip.frames, FEATURE_DIM):
            return features
    frames = open_arrays(clip)["frames"]
    features = np.full((clip.frames, FEATURE_DIM), np.nan, np.float32)
    for t in range(clip.frames):
        rgba = frames[t].astype(np.float32)
        rgb = np.clip(rgba[..., :3] + (255.0 - rgba[..., 3:]), 0, 255).astype(np.uint8)  # over white
        face = tracker(cv2.resize(rgb, (detect_size, detect_size), interpolation=cv2.INTER_CUBIC))
        if face is not None:
            features[t] = landmark_features(face)
    buffer = io.BytesIO()
    np.save(buffer, features)
    atomic_write_bytes(cached, buffer.getvalue())
    return features


@torch.no_grad()
def clip_targets(animator: AnimatorModule, clip: ClipInfo) -> torch.Tensor:
    """``T×D`` descriptor vectors of a clip's frames, composited over white at the animator's image size."""
    frames = torch.from_numpy(np.asarray(open_arrays(clip)["frames"], np.float32) / 255.0).permute(0, 3, 1, 2)
    rgb = frames[:, :3] + (1.0 - frames[:, 3:])
    rgb = F.interpolate(rgb, size=(animator.image_size, animator.image_size), mode="area")
    return torch.cat([animator.descriptor(chunk).vector for chunk in rgb.split(32)])


def windows(features: torch.Tensor, targets: torch.Tensor, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All length-``window`` runs of frames that have a face: ``N×window×F`` inputs, ``N×D`` targets (last frame)."""
    found = ~features.isnan().any(1)
    xs, ys = [], []
    for t in range(window - 1, len(features)):
        if found[t - window + 1 : t + 1].all():
            xs.append(features[t - window + 1 : t + 1])
            ys.append(targets[t])
    if not xs:
        return torch.zeros(0, window, features.shape[1]), torch.zeros(0, targets.shape[1])
    return torch.stack(xs), torch.stack(ys)


def info_nce(predicted: torch.Tensor, target: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Each prediction against every target in the batch; its own target is the positive."""
    logits = F.normalize(predicted, dim=1) @ F.normalize(target, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(logits)))


def train_adapter(animator_path: Path, clips_root: Path, landmarker: Path, out: Path, held_out: list[str], steps: int = 1500,
                  window: int = 1, hidden: int = 256, batch_size: int = 64, lr: float = 1e-3, contrastive: float = 0.1,
                  detect_size: int = 256, seed: int = 0) -> dict[str, float]:
    """Train and save; returns validation numbers (R² of the predicted descriptor vectors, face detection rate)."""
    torch.manual_seed(seed)
    animator = load_animator(animator_path).eval()
    animator.descriptor.motion_from_vector(torch.zeros(1, animator.descriptor.spec.vector_dim))  # refuses early if no adapter can drive it
    clips, bad = index_clips(clips_root)
    if not clips:
        raise UserFacingError(f"no clips under {str(clips_root)!r}" + (f" ({len(bad)} damaged)" if bad else ""))
    tracker = FaceTracker(landmarker, video=False, min_detection=0.3, min_presence=0.0)
    data: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {"train": [], "val": []}
    detected = total = 0
    for clip in track(clips, description="face landmarks and descriptor targets"):
        features = torch.from_numpy(clip_features(clip, tracker, detect_size))
        detected += int((~features.isnan().any(1)).sum())
        total += len(features)
        data["val" if clip.character in held_out else "train"].append(windows(features, clip_targets(animator, clip), window))
    tracker.close()
    train_x, train_y = (torch.cat(parts) for parts in zip(*data["train"])) if data["train"] else (torch.zeros(0), torch.zeros(0))
    if len(train_x) < batch_size:
        raise UserFacingError(f"only {len(train_x)} training frames with a detected face under {str(clips_root)!r}; render more clips")
    adapter = LandmarkAdapter(train_y.shape[1], hidden=hidden, temporal_window=window)
    adapter.mean.copy_(train_y.mean(0))
    adapter.std.copy_(train_y.std(0).clamp_min(1e-4))
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    adapter.train()
    for _ in track(range(steps), description="training the adapter"):
        index = torch.randint(len(train_x), (batch_size,))
        predicted = adapter(train_x[index])[:, -1]
        target = train_y[index]
        loss = F.smooth_l1_loss((predicted - adapter.mean) / adapter.std, (target - adapter.mean) / adapter.std) + contrastive * info_nce(predicted, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    adapter.eval()
    report = {"detection_rate": detected / max(1, total), "train_frames": float(len(train_x))}
    for split, parts in (("train", data["train"]), ("val", data["val"])):
        if parts:
            x, y = (torch.cat(p) for p in zip(*parts))
            if len(x):
                with torch.no_grad():
                    predicted = adapter(x)[:, -1]
                report[f"{split}_r2"] = float(1 - ((predicted - y) ** 2).sum() / ((y - y.mean(0)) ** 2).sum())
    animator.adapter = adapter
    save_animator(animator, out)
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animator", type=Path, required=True, help="trained AnimatorModule checkpoint (its descriptor is the target space)")
    parser.add_argument("--clips", type=Path, required=True, help="rendered Live2D clips (python -m lightning_app.render)")
    parser.add_argument("--landmarker", type=Path, required=True, help="MediaPipe face_landmarker.task")
    parser.add_argument("--out", type=Path, required=True, help="animator checkpoint with the adapter, for lightning_app.animate")
    parser.add_argument("--held-out", nargs="*", default=[], help="characters kept for validation")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--window", type=int, default=1, help="frames per prediction (1: MLP; >1: temporal convolution)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--contrastive", type=float, default=0.1, help="weight of the InfoNCE term")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        report = train_adapter(args.animator, args.clips, args.landmarker, args.out, args.held_out, args.steps, args.window,
                               args.hidden, args.batch_size, args.lr, args.contrastive, seed=args.seed)
    print("  ".join(f"{k}={v:.3f}" for k, v in report.items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
