"""Speed table: training steps/s and inference frames/s per config and size, puppet data throughput, memory.

    python benchmarks/speed.py                      # all configs at 64², 128², 256² on CPU (and GPU if present)
    python benchmarks/speed.py --sizes 128 --configs keypoints --steps 5

Targets on 2 CPU cores (see README): keypoints animates a 256² portrait at ≥ 25 frames/s (batch 1,
``torch.inference_mode``, descriptor + animator) and trains at 128², batch 8 at ≥ 2 steps/s; puppet data renders
≥ 10× what a training step consumes. All rows come from one run on one machine, so ratios are like for like.
OpenMP busy-waiting is switched off (``OMP_WAIT_POLICY=PASSIVE``) because it distorts timings on shared cores;
CPU-seconds per step are printed beside wall time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datamodules import PuppetDataModule, PuppetPairs  # noqa: E402
from lightning_app.cli import AnimatorCLI, CONFIG_DIR  # noqa: E402
from modules import AnimatorModule  # noqa: E402

CONFIG_ARGS = {
    "keypoints": [],
    "dino": ["--model.descriptor.init_args.pretrained=false"],  # random ViT-S/14: same cost as pretrained
}


def build_model(config: str, size: int) -> AnimatorModule:
    """The model exactly as ``cli.py fit --config configs/<config>.yaml`` builds it at ``size``."""
    args = [f"--config={CONFIG_DIR / f'{config}.yaml'}", f"--data.init_args.image_size={size}", *CONFIG_ARGS[config]]
    return AnimatorCLI(args=args, run=False).model


def timed(fn, repeats: int, warmup: int, sync) -> tuple[float, float]:
    """Mean (wall seconds, CPU seconds) per call, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - wall) / repeats, (time.process_time() - cpu) / repeats


def bench_model(config: str, size: int, device: torch.device, batch: int, steps: int) -> dict[str, float]:
    torch.manual_seed(0)
    model = build_model(config, size).to(device)
    optimizer = model.configure_optimizers()
    pairs = PuppetPairs(list(range(16)), length=batch, image_size=size, seed=0)
    data = torch.utils.data.default_collate([pairs[i] for i in range(batch)])
    source, driving = data["source"].to(device), data["driving"].to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def train_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        terms, _ = model.compute_losses({"source": source, "driving": driving})
        model.total_loss(terms).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    model.train()
    step_wall, step_cpu = timed(train_step, steps, warmup=2, sync=sync)
    model.eval()
    one_source, one_driving = source[:1], driving[:1]

    def infer() -> None:
        with torch.inference_mode():
            model(one_source, one_driving)

    frame_wall, _ = timed(infer, max(10, steps * 2), warmup=3, sync=sync)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"steps_per_s": 1 / step_wall, "cpu_s_per_step": step_cpu, "fps": 1 / frame_wall, "peak_mb": peak}


def bench_data(size: int, batch: int, workers: int, batches: int) -> float:
    """Puppet pairs per second through a DataLoader with ``workers`` processes (0: in this process)."""
    dm = PuppetDataModule(image_size=size, batch_size=batch, num_workers=workers, train_pairs=batch * (batches + 4))
    loader = iter(dm.train_dataloader())
    for _ in range(2 * max(1, workers)):  # start the workers and warm their caches
        next(loader)
    start = time.perf_counter()
    for _ in range(batches):
        next(loader)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=list(CONFIG_ARGS), choices=list(CONFIG_ARGS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="timed training steps per row")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for the data row")
    opts = parser.parse_args()
    sys.argv = sys.argv[:1]  # the models are built through the CLI parser: it must not see these options
    logging.getLogger("lightning").setLevel(logging.WARNING)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}")
    print("\n| config | device | size | train steps/s (batch %d) | CPU s/step | inference frames/s (batch 1) | peak MB |" % opts.batch)
    print("|---|---|---|---|---|---|---|")
    consumed: dict[int, float] = {}
    for device in devices:
        for config in opts.configs:
            for size in opts.sizes:
                r = bench_model(config, size, device, opts.batch, opts.steps)
                print(f"| {config} | {device.type} | {size}² | {r['steps_per_s']:.2f} | {r['cpu_s_per_step']:.2f} | {r['fps']:.1f} | {r['peak_mb']:.0f} |", flush=True)
                if device.type == "cpu":
                    consumed[size] = max(consumed.get(size, 0.0), r["steps_per_s"] * opts.batch)
    print(f"\n| puppet data | size | pairs/s, 0 workers | pairs/s, {opts.workers} workers | ÷ fastest CPU training consumption |")
    print("|---|---|---|---|---|")
    for size in opts.sizes:
        single = bench_data(size, opts.batch, 0, batches=30)
        multi = bench_data(size, opts.batch, opts.workers, batches=60)
        ratio = multi / consumed[size] if size in consumed else float("nan")
        print(f"| puppet | {size}² | {single:.0f} | {multi:.0f} | {ratio:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
