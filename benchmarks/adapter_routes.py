"""Which training pairs, window and losses make the best adapter? The README's route comparison, one adapter run each.

    python benchmarks/adapter_routes.py --animator ANIMATOR.ckpt --clips data/live2d \
        --landmarker ../shared/mediapipe/face_landmarker.task --driving ../shared/driving --models ../shared/live2d

Every row trains ``lightning_app.train_adapter fit`` (``configs/adapter/``) for the same steps on the same animator:
Live2D pairs from the clips of ``--characters`` (validation: the clips of ``--held-out``), human pairs from the
``--train-videos`` rendered on ``--characters`` (validation: ``--val-videos``). It prints one markdown row per run:
held-out R² (each sequence's mean removed) per route, and on the held-out videos the correlation of the implied
parameters with the face's geometric reading and the jitter ratio (:mod:`modules.adapter_metrics`). Clips of other
characters under ``--clips`` are not read (the run sees a folder of links to the chosen ones, in ``--out``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_app.cli import CONFIG_DIR  # noqa: E402
from lightning_app.train_adapter import AdapterCLI  # noqa: E402
from modules.adapter_metrics import COMPARED  # noqa: E402

ROWS = {  # name: (routes, window, contrastive and cycle weights)
    "Live2D renders, window 1": (("live2d",), 1, 0.1),
    "human → parameters → renders, window 1 (the default)": (("human",), 1, 0.1),
    "both, window 1": (("live2d", "human"), 1, 0.1),
    "both, window 1, regression only": (("live2d", "human"), 1, 0.0),
    "both, window 4": (("live2d", "human"), 4, 0.1),
    "human → parameters → renders, window 4": (("human",), 4, 0.1),
}


def run_row(routes: tuple[str, ...], window: int, weight: float, args: argparse.Namespace, clips: Path, logs: Path) -> dict[str, dict[str, float]]:
    videos = [str(args.driving / f"{stem}.mp4") for stem in (*args.train_videos, *args.val_videos)]
    options = [f"--config={CONFIG_DIR / 'adapter' / f'{route}.yaml'}" for route in routes] + [
        f"--model.animator={args.animator}", f"--data.landmarker={args.landmarker}", f"--model.window={window}",
        f"--model.contrastive={weight}", f"--model.cycle={weight}", f"--trainer.max_steps={args.steps}",
        f"--trainer.logger.init_args.save_dir={logs}", "--trainer.enable_progress_bar=false", f"--data.held_out=[{', '.join(args.held_out)}]"]
    if "live2d" in routes:
        options.append(f"--data.clips={clips}")
    if "human" in routes:
        options += [f"--data.videos=[{', '.join(videos)}]", f"--data.held_out_videos=[{', '.join(args.val_videos)}]",
                    f"--data.models={args.models}", f"--data.characters=[{', '.join(args.characters)}]", f"--data.cache={args.out / 'human_pairs'}",
                    "--data.max_video_frames=null"]
    return AdapterCLI(args=["fit", *options]).model.report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--animator", type=Path, required=True)
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--landmarker", type=Path, required=True)
    parser.add_argument("--driving", type=Path, required=True, help="folder of the human videos")
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--characters", nargs="+", default=["Hiyori", "Haru", "Koharu", "Shizuku"])
    parser.add_argument("--held-out", nargs="+", default=["Mark", "Rice"])
    parser.add_argument("--train-videos", nargs="+", default=["d6", "d9"])
    parser.add_argument("--val-videos", nargs="+", default=["d3", "d0"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--out", type=Path, default=Path("logs/adapter_routes"))
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # each row's CLI reads its own arguments
    clips = args.out / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    for name in (*args.characters, *args.held_out):
        link = clips / name
        if not link.exists():
            link.symlink_to((args.clips / name).resolve(), target_is_directory=True)
    short = [name.removeprefix("Param") for name in COMPARED]
    lines = ["| pairs | Live2D val r2_rel | human val r2_rel | " + " | ".join(f"r {n}" for n in short) + " | jitter ratio |",
             "|---" * (len(short) + 4) + "|"]
    ceiling = ""
    for name, (routes, window, weight) in ROWS.items():
        report = run_row(routes, window, weight, args, clips, args.out / "logs")
        live2d, human = report.get("live2d/val"), report.get("human/val")
        cells = [f"{live2d['r2_rel']:.2f}" if live2d else "–", f"{human['r2_rel']:.2f}" if human else "–",
                 *(f"{human[f'r_{n}']:.2f}" if human else "–" for n in short), f"{human['jitter_ratio']:.2f}" if human else "–"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if human:
            ceiling = "ceiling on the held-out videos (the targets' implied parameters): " + ", ".join(f"{n} {human[f'ceiling_{n}']:.2f}" for n in short)
        print("\n".join(lines), flush=True)
    print(ceiling)


if __name__ == "__main__":
    main()
