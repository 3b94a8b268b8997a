"""Train the MediaPipe-to-canonical adapter of a trained animator::

    python -m lightning_app.train_adapter --animator CKPT --landmarker face_landmarker.task --out CKPT \\
        [--clips data/live2d] [--held-out NAME ...] \\
        [--videos human/*.mp4 --held-out-videos d3 --models ../shared/live2d --cache data/human_pairs]

Training pairs (:mod:`lightning_app.adapter_pairs`) come from either route or both: ``--clips`` (MediaPipe on
rendered Live2D clips → the descriptor of the same frame) and ``--videos`` (MediaPipe on human videos → their
geometric parameters rendered on the ``--models`` characters → the mean descriptor). Clips of ``--held-out``
characters and the ``--held-out-videos`` (by stem) are kept for validation (a video given only to be held out
evaluates a Live2D-only adapter on human faces); human poses are rendered on the ``--characters`` that are not
held out.

Losses, on descriptor vectors standardised by the training targets:

* regression: smooth L1 to the target;
* contrastive: InfoNCE across the batch (each prediction closest to its own target);
* cycle consistency: descriptor → parameters → descriptor through two linear maps fitted (ridge) on the training
  pairs whose pose parameters are known, so a prediction stays on the set of descriptors that some pose of the
  rig explains.

The same descriptor → parameters map reads the **parameter trajectory the adapter implies** on human videos; the
report compares it with the geometric reading of the face (correlation per parameter; the map applied to the
targets themselves is the ceiling) and gives the adapter's jitter (frame-to-frame change of its output over
that of the targets). The animator is written to ``--out`` with the adapter in its ``adapter`` slot.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import track
from rich.table import Table
from torch import Tensor

from core.errors import UserFacingError, exit_on_user_error
from core.vocabulary import PARAMETER_INDEX, parameters_in_unit_interval
from datamodules.face_landmarks import FaceTracker
from datamodules.live2d.clips import index_clips
from datamodules.live2d_datamodule import DEFAULT_HELD_OUT
from lightning_app.adapter_pairs import PairSequence, human_pairs, live2d_pairs
from lightning_app.checkpoints import load_animator, save_animator
from lightning_app.render import find_models
from modules.adapter import LandmarkAdapter
from modules.adapter_losses import CycleMaps, info_nce

COMPARED = ("ParamAngleX", "ParamAngleY", "ParamAngleZ", "ParamEyeLOpen", "ParamEyeROpen", "ParamMouthOpenY")


def windows(sequence: PairSequence, window: int) -> tuple[Tensor, Tensor, Tensor]:
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


def _r2(z_hat: Tensor, z: Tensor, std: Tensor) -> float:
    """R² of predictions ``z_hat`` of ``z`` (standardised ``N×D``), summed over the descriptor's own units."""
    return float(1 - ((z_hat - z) ** 2 * std**2).sum() / ((z - z.mean(0)) ** 2 * std**2).sum())


def correlation(a: Tensor, b: Tensor) -> float:
    """Pearson correlation of two ``N`` series; NaN where either is constant."""
    if a.std() < 1e-6 or b.std() < 1e-6:
        return float("nan")
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


@torch.no_grad()
def evaluate(adapter: LandmarkAdapter, maps: CycleMaps, sequences: list[PairSequence], window: int, human: bool) -> dict[str, float]:
    """R² of the predicted descriptor vectors; for human videos also the correlation of the implied parameters
    with the geometric reading (and of the targets' implied parameters: the ceiling) and the jitter ratio."""
    runs = [(adapter.standardise(adapter(x)[:, -1]), adapter.standardise(y), p) for x, y, p in (windows(s, window) for s in sequences)]
    runs = [run for run in runs if len(run[0])]
    if not runs:
        return {}
    z_hat, z, p = (torch.cat(column) for column in zip(*runs))
    relative = [(a - a.mean(0), b - b.mean(0)) for a, b, _ in runs]  # each sequence's own mean removed: what relative driving sees
    row = {"frames": float(len(z)), "r2": _r2(z_hat, z, adapter.std), "r2_rel": _r2(*(torch.cat(c) for c in zip(*relative)), adapter.std)}
    if not human:
        return row
    implied, ceiling = maps.parameters(z_hat), maps.parameters(z)
    for name in COMPARED:
        i, short = PARAMETER_INDEX[name], name.removeprefix("Param")
        row[f"r_{short}"] = correlation(implied[:, i], p[:, i])
        row[f"ceiling_{short}"] = correlation(ceiling[:, i], p[:, i])
    moves = [(a.diff(dim=0).norm(dim=1), b.diff(dim=0).norm(dim=1)) for a, b, _ in runs if len(a) > 1]
    row["jitter_ratio"] = float(torch.cat([a for a, _ in moves]).mean() / torch.cat([b for _, b in moves]).mean())
    return row


def train_adapter(animator_path: Path, out: Path, landmarker: Path, *, clips: Path | None = None, held_out: Sequence[str] = (),
                  videos: Sequence[Path] = (), held_out_videos: Sequence[str] = (), models: Path | None = None,
                  characters: Sequence[str] | None = None, cache: Path = Path("data/human_pairs"),
                  max_video_frames: int | None = None, steps: int = 1500, window: int = 4, hidden: int = 256, batch_size: int = 64,
                  lr: float = 1e-3, contrastive: float = 0.1, cycle: float = 0.1, detect_size: int = 256, workers: int = 2,
                  seed: int = 0) -> dict[str, dict[str, float]]:
    """Train and save the adapter; returns ``{"<route>/<split>": {metric: value}}`` (see :func:`evaluate`) plus
    ``"data"`` (face detection rates, training pairs)."""
    torch.manual_seed(seed)
    if clips is None and not videos:
        raise UserFacingError("give training pairs: --clips (rendered Live2D clips) and/or --videos (human videos, with --models)")
    if videos and models is None:
        raise UserFacingError("--videos needs --models (the Live2D model folders to render the human's parameters on)")
    animator = load_animator(animator_path).eval()
    animator.descriptor.motion_from_vector(torch.zeros(1, animator.descriptor.spec.vector_dim))  # refuses early if no adapter can drive it
    routes: dict[str, list[PairSequence]] = {}
    if clips is not None:
        found, bad = index_clips(clips)
        if not found:
            raise UserFacingError(f"no clips under {str(clips)!r}" + (f" ({len(bad)} damaged)" if bad else ""))
        tracker = FaceTracker(landmarker, video=False, min_detection=0.3, min_presence=0.0)
        routes["live2d"] = live2d_pairs(animator, found, tracker, detect_size)
        tracker.close()
    if videos:
        renderable = {name: path for name, path in find_models(models, characters).items() if name not in held_out}
        if not renderable:
            raise UserFacingError(f"every model under {str(models)!r} is held out; human poses need a training character to be rendered on")
        routes["human"] = [human_pairs(animator, Path(v), landmarker, renderable, cache, max_video_frames, workers) for v in videos]
    splits = {(route, split): [s for s in sequences if (s.group in (held_out if route == "live2d" else held_out_videos)) == (split == "val")]
              for route, sequences in routes.items() for split in ("train", "val")}
    parts = [windows(s, window) for route in routes for s in splits[route, "train"]]
    train_x, train_y, train_p = (torch.cat(column) for column in zip(*parts)) if parts else (torch.zeros(0),) * 3
    if len(train_x) < batch_size:
        raise UserFacingError(f"only {len(train_x)} training frames with a detected face; render more clips or give more videos")
    adapter = LandmarkAdapter(train_y.shape[1], hidden=hidden, temporal_window=window)
    adapter.set_statistics(train_x, train_y)
    maps = CycleMaps(adapter.standardise(train_y), train_p)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    adapter.train()
    for _ in track(range(steps), description="training the adapter"):
        index = torch.randint(len(train_x), (batch_size,))
        z_hat, z = adapter.standardise(adapter(train_x[index])[:, -1]), adapter.standardise(train_y[index])
        loss = F.smooth_l1_loss(z_hat, z) + contrastive * info_nce(z_hat, z) + cycle * maps.cycle_loss(z_hat)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    adapter.eval()
    report = {f"{route}/{split}": evaluate(adapter, maps, sequences, window, route == "human") for (route, split), sequences in splits.items() if sequences}
    report["data"] = {"train_pairs": float(len(train_x))} | {
        f"{route}_face_rate": float(np.mean([(~s.features.isnan().any(1)).float().mean().item() for s in sequences])) for route, sequences in routes.items()}
    animator.adapter = adapter
    save_animator(animator, out)
    return report


def print_report(report: dict[str, dict[str, float]]) -> None:
    """One column per route and split, one row per measure."""
    columns = [name for name in report if name != "data"]
    table = Table(title="adapter: R² of the descriptor vectors (rel: each sequence's mean removed); correlation of the implied parameters "
                        "with the geometric reading (r) and its ceiling (the targets' implied parameters); jitter ratio")
    table.add_column("measure")
    for column in columns:
        table.add_column(column, justify="right")
    for measure in dict.fromkeys(k for c in columns for k in report[c]):
        table.add_row(measure, *(f"{report[c][measure]:.2f}" if measure in report[c] else "" for c in columns))
    Console(width=160).print(table)
    print("  ".join(f"{k}={v:.3g}" for k, v in report["data"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animator", type=Path, required=True, help="trained AnimatorModule checkpoint (its descriptor is the target space)")
    parser.add_argument("--landmarker", type=Path, required=True, help="MediaPipe face_landmarker.task")
    parser.add_argument("--out", type=Path, required=True, help="animator checkpoint with the adapter, for lightning_app.animate")
    parser.add_argument("--clips", type=Path, help="route 1: rendered Live2D clips (python -m lightning_app.render)")
    parser.add_argument("--held-out", nargs="*", default=list(DEFAULT_HELD_OUT),
                        help="characters kept for validation (and not rendered with human poses); default: the default split")
    parser.add_argument("--videos", type=Path, nargs="*", default=[], help="route 2: human face videos")
    parser.add_argument("--held-out-videos", nargs="*", default=[], help="video stems kept for validation")
    parser.add_argument("--models", type=Path, help="Live2D model folders the human poses are rendered on (route 2)")
    parser.add_argument("--characters", nargs="+", help="only these model folders (route 2; default: all that are not held out)")
    parser.add_argument("--cache", type=Path, default=Path("data/human_pairs"), help="route 2's faces and renders")
    parser.add_argument("--max-video-frames", type=int, help="read at most this many frames of each video")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--window", type=int, default=4, help="frames per prediction (1: MLP; >1: causal temporal convolution)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--contrastive", type=float, default=0.1, help="weight of the InfoNCE term")
    parser.add_argument("--cycle", type=float, default=0.1, help="weight of the descriptor → parameters → descriptor term")
    parser.add_argument("--workers", type=int, default=2, help="rendering processes (route 2)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        report = train_adapter(args.animator, args.out, args.landmarker, clips=args.clips, held_out=args.held_out, videos=args.videos,
                               held_out_videos=args.held_out_videos, models=args.models, characters=args.characters, cache=args.cache, max_video_frames=args.max_video_frames,
                               steps=args.steps, window=args.window, hidden=args.hidden, batch_size=args.batch_size, lr=args.lr,
                               contrastive=args.contrastive, cycle=args.cycle, workers=args.workers, seed=args.seed)
    print_report(report)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
