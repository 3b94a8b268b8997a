"""Live2D throughput: render frames/s per model with ground truth (one process, then N processes at once), and
clip-loader pairs/s against what training consumes, at 64², 128² and 256².

    python benchmarks/live2d_speed.py --models ../shared/live2d --size 256 --workers 2

All rows come from one run on one machine (``OMP_WAIT_POLICY=PASSIVE``). The loader rows read a small dataset
rendered into a temporary folder by the same code as ``python -m lightning_app.render``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from datamodules import Live2DClipDataModule  # noqa: E402
from datamodules.live2d.model_files import find_models  # noqa: E402
from datamodules.live2d.render_process import render_pool  # noqa: E402
from datamodules.live2d.trajectories import random_trajectory  # noqa: E402
from lightning_app.render import render_dataset  # noqa: E402
from speed import bench_model  # noqa: E402  (benchmarks/speed.py, beside this file)


def render_rate(model_json: str, size: int, frames: int) -> tuple[float, float, bool]:
    """(frames/s, model load seconds, whether the frames have ground truth) for one character in this process;
    runs in a spawned worker."""
    from datamodules.live2d.character import Live2DCharacter

    start = time.perf_counter()
    character = Live2DCharacter(model_json, size=size)
    loaded = time.perf_counter() - start
    poses = random_trajectory(0, frames)
    character.render(poses[0])
    start = time.perf_counter()
    for pose in poses:
        character.render(pose)
    return frames / (time.perf_counter() - start), loaded, character.ground_truth_problem is None


def loader_rate(root: str, size: int, workers: int, batches: int) -> float:
    dm = Live2DClipDataModule(root, image_size=size, batch_size=8, num_workers=workers, held_out=[next(p.name for p in sorted(Path(root).iterdir()) if p.is_dir())])
    loader = iter(dm.train_dataloader())
    for _ in range(2 * max(1, workers)):
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return 8 * batches / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "live2d")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--train-sizes", type=int, nargs="+", default=[64, 128, 256], help="model input sizes for the loader rows")
    opts = parser.parse_args()
    models = find_models(opts.models, None)
    print(f"\n| model | ground truth | render frames/s at {opts.size}², 1 process | {opts.workers} processes at once, total | model load s |")
    print("|---|---|---|---|---|")
    rendered = []
    with render_pool(opts.workers) as pool:
        for name, path in models.items():
            fps, loaded, truth = pool.submit(render_rate, str(path), opts.size, opts.frames).result()
            concurrent = [pool.submit(render_rate, str(path), opts.size, opts.frames) for _ in range(opts.workers)]
            total = sum(f.result()[0] for f in concurrent)  # each process times its own render loop; the loops overlap
            if truth:
                rendered.append(fps)
            print(f"| {name} | {'yes' if truth else 'no'} | {fps:.0f} | {total:.0f} | {loaded:.2f} |", flush=True)
    if rendered:
        print(f"\nmedian of the {len(rendered)} characters with ground truth: {float(np.median(rendered)):.0f} frames/s in one process")
    with tempfile.TemporaryDirectory() as root:
        render_dataset(opts.models, Path(root), size=max(opts.train_sizes), clips=2, replays=1, frames=30, workers=opts.workers, characters=list(models)[:3])
        print("\n| model input | clip loader pairs/s, in process | with 2 workers | keypoints training consumes (steps/s × 8) | loader ÷ consumption |")
        print("|---|---|---|---|---|")
        for size in opts.train_sizes:
            in_process, workers = loader_rate(root, size, 0, 30), loader_rate(root, size, 2, 30)
            consumed = 8 * bench_model("keypoints", size, torch.device("cpu"), 8, 5)["steps_per_s"]
            print(f"| {size}² | {in_process:.0f} | {workers:.0f} | {consumed:.1f} | {max(in_process, workers) / consumed:.0f}× |", flush=True)


if __name__ == "__main__":
    main()
