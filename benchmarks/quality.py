"""Animation quality at equal training time: each config trains for the same wall-clock budget on the same clips,
then animates held-out characters it never saw, scored against the no-motion floor.

    python benchmarks/quality.py --data data/live2d                  # 480 s per config at 64², batch 8
    python benchmarks/quality.py --data data/live2d --size 128 --budget 1800
    python benchmarks/quality.py --data data/live2d --run "kp=configs/keypoints.yaml --model.losses.expression=1"

Each ``--run`` is ``NAME=CONFIG[,CONFIG...]`` followed by CLI overrides (one shell word: quote it). Every run
gets the same data (``configs/data/live2d.yaml`` at ``--data``, ``--held-out`` characters kept out of training),
seed, batch size, loader and optimisation around it (gradient clipping at 1, warm-up then a cosine over the
*wall-clock* budget, as no step count is known in advance); the configs' own trainer settings are not used.

Scores, on the held-out characters only (``datamodules.protocols``):

* **self** — a clip's first frame is the portrait, every frame drives it, the frame is the target;
* **cross** — held-out character A's neutral frame is the portrait, another character B's frame t of a shared
  trajectory drives, A rendered at B's parameters is the target; ``abs`` uses B's motion as is, ``rel`` its
  change since its first frame, ``rel+scale`` that change scaled to the portrait's keypoint spread; the headline
  table gives the relative transfer ``animate`` uses for that model (``rel``, or ``rel+scale`` where the model sets
  ``adapt_movement_scale``) over all items and for the worst portrait, as the target is per portrait;
* **floor** — the no-motion answer (output = portrait) on the same items; ``under`` = 1 − L1 / floor;
* **face** — L1 over the target's eye, brow and mouth pixels (its region map) and the same floor;
* **flow ceiling** — the portrait warped onto the target by classical optical flow computed *from the target*
  (:func:`optical_flow_warp`; scored once, with the first run, as it does not depend on the model): not a method, as it reads the answer, but about what a generator that only moves the
  portrait's pixels could reach with a near-perfect motion estimate — above it lies only synthesis;
* **registration alone** — no network: the portrait warped by the affine that registers the driving frame with the
  portrait (self) or with the driver's first frame (cross, relative) by OpenCV's ECC (:mod:`modules.registration`;
  scored once, with the flow ceiling). A method, as it reads only the driver: what a single global motion does;
* **fps** — networks only (registration included), 256² batch 1 on this machine, portrait described once, timed on
  the first held-out self pair (upscaled: real frames, since ECC's iterations depend on the content);
* **own motion** (cross only) — the same generator driven by the target itself (absolute: the target's own motion,
  registered with the portrait): not a method, as it reads the answer, but what the generator makes of a *perfect
  transfer*; the gap between it and ``rel`` is the transfer's (how the driver's motion is mapped onto the portrait),
  the gap between it and the flow ceiling the generator's;
* **true parameters** (descriptors whose vector is the rig parameters) — the same items animated with the
  ground-truth parameters of portrait and driver in place of the descriptor's reading (landmarks still read:
  absolute in self, relative in cross): what the generator makes of a perfect reading, i.e. of a parameter
  source such as a human face's geometry.

Writes ``quality.json``, each run's trained model (``<run>.ckpt``, a Lightning checkpoint for ``cli.py test`` or
``animate``) and one strip PNG per run (rows: per held-out character the frames with the most closed eyes, the
most open mouth and the largest head turn — self, then cross; columns: portrait | driving | output | target, the
cross output in ``animate``'s transfer) into ``--out``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spin-waiting threads distort timings on shared cores

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import timedelta  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning import Callback, Trainer  # noqa: E402
from torchvision.utils import make_grid, save_image  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbacks import GradientNormClipping  # noqa: E402
from core.errors import UserFacingError, exit_on_user_error  # noqa: E402
from core.files import atomic_open, atomic_path, atomic_write_text  # noqa: E402
from core.vocabulary import EXPRESSION_REGIONS, PARAMETER_INDEX  # noqa: E402
from datamodules.live2d_datamodule import DEFAULT_HELD_OUT  # noqa: E402
from lightning_app.cli import AnimatorCLI  # noqa: E402
from modules.animator_module import PreparedPortrait  # noqa: E402
from modules.losses import region_error, region_mask  # noqa: E402
from modules.registration import register_affine, warp_affine  # noqa: E402

DEFAULT_RUNS = [
    "keypoints+registration+reader=configs/keypoints.yaml,configs/backbone/warping.yaml,configs/registration.yaml,configs/parameter_reader.yaml "
    "--model.reconstruction_beta=0 --data.init_args.cross_fraction=0.25",
    "keypoints+warping-l1=configs/keypoints.yaml,configs/backbone/warping.yaml --model.reconstruction_beta=0",
    "keypoints+expression_pose=configs/keypoints.yaml,configs/backbone/expression_pose.yaml",
    "rig+expression_pose=configs/rig.yaml",
]
DATA_CONFIG = ROOT / "configs" / "data" / "live2d.yaml"


@dataclass
class Run:
    """One benchmarked configuration: a name, its config files and CLI overrides."""

    name: str
    configs: list[str]
    overrides: list[str] = field(default_factory=list)

    @staticmethod
    def parse(spec: str) -> Run:
        words = shlex.split(spec)
        if not words or "=" not in words[0]:
            raise UserFacingError(f"--run {spec!r}: expected NAME=CONFIG[,CONFIG...] [--override=value ...]")
        name, configs = words[0].split("=", 1)
        files = [c for c in configs.split(",") if c]
        missing = [c for c in files if not (ROOT / c).is_file() and not Path(c).is_file()]
        if not re.fullmatch(r"[\w+.-]+", name) or not files or missing:
            raise UserFacingError(f"--run {spec!r}: needs a name (letters, digits, + - _ .) and existing config files"
                                  + (f" (not found: {', '.join(missing)})" if missing else ""))
        return Run(name, files, words[1:])


class WallClockCosine(Callback):
    """Linear warm-up over ``warmup_steps``, then a cosine from the optimizer's ``lr`` to ``min_ratio·lr`` over the
    remaining wall-clock ``budget`` seconds (set per optimizer step)."""

    def __init__(self, budget: float, warmup_steps: int = 200, min_ratio: float = 0.01) -> None:
        self.budget, self.warmup_steps, self.min_ratio = budget, warmup_steps, min_ratio
        self.start = 0.0
        self.peaks: list[float] = []

    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        self.start = time.monotonic()
        self.peaks = [group["lr"] for group in trainer.optimizers[0].param_groups]

    def on_train_batch_start(self, trainer: Trainer, pl_module, batch, batch_idx: int) -> None:
        step = trainer.global_step
        if step < self.warmup_steps:
            factor = self.min_ratio + (1.0 - self.min_ratio) * step / self.warmup_steps
        else:
            progress = min(1.0, (time.monotonic() - self.start) / self.budget)
            factor = self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        for group, peak in zip(trainer.optimizers[0].param_groups, self.peaks):
            group["lr"] = peak * factor


class PlainProgress(Callback):
    """A plain line every ``every`` seconds: this run's step and time, and the ETA of the whole benchmark."""

    def __init__(self, label: str, budget: float, remaining_after: float, every: float = 30.0) -> None:
        self.label, self.budget, self.remaining_after, self.every = label, budget, remaining_after, every
        self.start = self.last = 0.0

    def on_train_start(self, trainer: Trainer, pl_module) -> None:
        self.start = self.last = time.monotonic()

    def on_train_batch_end(self, trainer: Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            elapsed = now - self.start
            loss = float(outputs["loss"]) if isinstance(outputs, dict) else float(outputs)
            eta = max(0.0, self.budget - elapsed) + self.remaining_after
            print(f"{self.label}: step {trainer.global_step}, {elapsed:.0f}/{self.budget:.0f} s, loss {loss:.4f}; benchmark ETA {eta / 60:.1f} min", flush=True)


def build(run: Run, args: argparse.Namespace):
    """The run's model and data module, as ``cli.py fit`` would build them with the benchmark's data settings."""
    cli_args = [f"--config={c if Path(c).is_file() else ROOT / c}" for c in run.configs] + [
        f"--config={DATA_CONFIG}", f"--data.init_args.root={args.data}", f"--data.init_args.image_size={args.size}",
        f"--data.init_args.batch_size={args.batch}", f"--data.init_args.num_workers={args.workers}",
        f"--data.init_args.held_out=[{', '.join(args.held_out)}]", f"--seed_everything={args.seed}",
        "--trainer.logger=false", *run.overrides,
    ]
    argv, sys.argv = sys.argv, sys.argv[:1]  # the benchmark's own arguments are not the CLI's
    try:
        cli = AnimatorCLI(args=cli_args, run=False)
    finally:
        sys.argv = argv
    return cli.model, cli.datamodule


def train(model, datamodule, budget: float, progress: PlainProgress) -> Trainer:
    """Train for ``budget`` seconds; returns the trainer (its ``global_step``: the optimizer steps done)."""
    trainer = Trainer(
        accelerator="auto", devices=1, max_epochs=-1, max_steps=-1, max_time=timedelta(seconds=budget), logger=False,
        callbacks=[GradientNormClipping(1.0), WallClockCosine(budget), progress], enable_checkpointing=False,
        limit_val_batches=0, num_sanity_val_steps=0, enable_progress_bar=False, enable_model_summary=False,
    )
    if model.needs_parameters:
        datamodule.require_parameters()
    trainer.fit(model, datamodule=datamodule)
    return trainer


def animate_with_true_parameters(model, batch: dict, relative: bool) -> torch.Tensor:
    """Clamped predictions with the true parameters (``source_params``, ``driving_params``; unknown entries keep the
    reading) as the vectors of a parameter descriptor's motions, the landmarks as read (``relative``: the driver's
    change since ``driving_first`` applied to the portrait's). With registration the driving frame is registered as
    :meth:`~modules.animator_module.AnimatorModule.animate` does (the driver's change is its registered keypoints
    themselves: the reference's are the centre and the identity)."""
    size = batch["source"].shape[0]
    frames = [batch["source"], batch["driving"]] + ([batch["driving_first"]] if relative else [])
    motion = model.describe(torch.cat(frames))
    source_motion = model.descriptor.with_parameters(motion[:size], batch["source_params"])
    driving_motion = motion[size : 2 * size]
    if relative:
        driving_motion = source_motion.relative(driving_motion, motion[2 * size :])
    driving_motion = model.descriptor.with_parameters(driving_motion, batch["driving_params"])
    driving_motion = model.registered(driving_motion, batch["driving"], batch["driving_first" if relative else "source"], transfer=relative)
    return model.animate_motion(PreparedPortrait(batch["source"], model.registered(source_motion)), driving_motion)


def optical_flow_warp(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The source warped onto the target by dense optical flow that reads the target: a ceiling for warps.

    For each target pixel, OpenCV's Farneback flow (grayscale, 3 pyramid levels, 7-pixel windows: of five settings
    tried on the default split's held-out self pairs, the best at 128² and 2 points under the best at 64²;
    frames under 64 px are upscaled for the estimate) says where it lies in
    the source; the source is sampled there (bilinear, border replicated). Pixels that exist in the target only
    (an eye closing, a mouth opening, background uncovered) stay wrong, so the gap between this and the floor is
    what a warp can win, and the rest of the error is what only synthesis can.

    Args:
        source, target: ``B×3×H×W`` in ``[0, 1]`` (any device).

    Returns:
        ``B×3×H×W`` in ``[0, 1]`` on the source's device.
    """
    height, width = source.shape[-2:]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    factor = math.ceil(64 / min(height, width))  # the windows need ~64 px: smaller frames are estimated upscaled

    def gray(image: np.ndarray) -> np.ndarray:
        gray = cv2.cvtColor((image * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)
        return cv2.resize(gray, (width * factor, height * factor), interpolation=cv2.INTER_LINEAR) if factor > 1 else gray

    images = source.permute(0, 2, 3, 1).float().cpu().numpy()
    warped = []
    for image, target_image in zip(images, target.permute(0, 2, 3, 1).float().cpu().numpy()):
        source_gray, target_gray = gray(image), gray(target_image)
        flow = cv2.calcOpticalFlowFarneback(target_gray, source_gray, None, 0.5, 3, 7, 5, 5, 1.1, 0)
        if factor > 1:
            flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_AREA) / factor
        warped.append(cv2.remap(image, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    return torch.from_numpy(np.stack(warped)).permute(0, 3, 1, 2).to(source.device, source.dtype).clamp(0.0, 1.0)


@torch.inference_mode()
def evaluate(model, datamodule, clips: int, frames: int, flow_ceiling: bool = True) -> dict:
    """Per-item scores on the held-out characters, with the items' pictures for strips (and the flow ceiling's, kind
    ``flow``, unless ``flow_ceiling`` is off: it does not depend on the model, so the benchmark scores it once)."""
    model.eval()
    datamodule.test_protocols, datamodule.test_clips, datamodule.test_clip_frames = ["self", "cross"], clips, frames
    names = {i: n for n, i in datamodule.test_set.identity.items()}
    loaders = dict(zip(datamodule.test_names, datamodule.test_dataloader()))
    device = model.device
    items: dict[str, dict[str, list]] = {}
    for protocol in ("self", "cross"):
        rows: dict[str, list] = {}
        for batch in loaders[f"{protocol}/held_out"]:
            batch = {k: v.to(device) for k, v in batch.items()}
            source, target = batch["source"], batch["target"]
            outputs = {}
            plain = model.animate(source, batch["driving"], batch["driving_first"] if protocol == "cross" else None, scale_movement=False)
            outputs["abs"] = plain["absolute"]
            if protocol == "cross":
                outputs["rel"] = plain["relative"]
                outputs["rel+scale"] = model.animate(source, batch["driving"], batch["driving_first"], scale_movement=True)["relative"]
                outputs["own"] = model.animate(source, target)["absolute"]  # the portrait's own motion: reads the target
            if model.descriptor.vector_is_parameters:
                outputs["params"] = animate_with_true_parameters(model, batch, relative=protocol == "cross")
            outputs["floor"] = source
            if flow_ceiling:
                outputs["flow"] = optical_flow_warp(source, target)
                reference = source if protocol == "self" else batch["driving_first"]
                outputs["affine"] = warp_affine(source, register_affine(reference, batch["driving"])[0])
            face = region_mask(batch["target_regions"], EXPRESSION_REGIONS)
            for kind, output in outputs.items():
                rows.setdefault(f"l1/{kind}", []).append((output - target).abs().mean(dim=(1, 2, 3)).cpu())
                rows.setdefault(f"face/{kind}", []).append(region_error(output, target, face, reduction="none").cpu())
            rows.setdefault("character", []).extend(names[int(i)] for i in batch["identity"])
            rows.setdefault("params", []).append(batch["driving_params"].cpu())
            for key in ("source", "driving", "target"):
                rows.setdefault(f"image/{key}", []).append(batch[key].cpu())
            rows.setdefault("image/output", []).append((outputs[transfer_kind(model)] if protocol == "cross" else outputs["abs"]).cpu())
        items[protocol] = {k: (v if k == "character" else torch.cat(v)) for k, v in rows.items()}
    return items


def transfer_kind(model) -> str:
    """The cross-identity kind that ``animate`` (relative by default) gives with ``model``: ``rel+scale`` where the
    model adapts the movement scale, else ``rel``."""
    return "rel+scale" if model.adapt_movement_scale else "rel"


def summarise(items: dict) -> dict[str, float]:
    """Mean scores: ``self/l1``, ``self/floor``, ``cross/<kind>/<character>`` ..., ``face/...``."""
    out: dict[str, float] = {}
    for protocol, rows in items.items():
        kinds = [k.split("/", 1)[1] for k in rows if k.startswith("l1/")]
        for kind in kinds:
            for metric in ("l1", "face"):
                values = rows[f"{metric}/{kind}"]
                out[f"{protocol}/{metric}/{kind}"] = float(values.nanmean())
                for character in sorted(set(rows["character"])):
                    chosen = torch.tensor([c == character for c in rows["character"]])
                    out[f"{protocol}/{metric}/{kind}/{character}"] = float(values[chosen].nanmean())
    return out


def strip_indices(items: dict) -> list[tuple[str, int]]:
    """Fixed rows for the strips: per protocol and held-out portrait character, the target frame with the most
    closed eyes, the most open mouth and the largest head turn (from the ground-truth parameters, so every run
    shows the same frames)."""
    rows = []
    for protocol in ("self", "cross"):
        params = items[protocol]["params"]
        eyes = params[:, PARAMETER_INDEX["ParamEyeLOpen"]] + params[:, PARAMETER_INDEX["ParamEyeROpen"]]
        mouth = params[:, PARAMETER_INDEX["ParamMouthOpenY"]]
        turn = params[:, PARAMETER_INDEX["ParamAngleX"]].abs() + params[:, PARAMETER_INDEX["ParamAngleY"]].abs()
        for character in sorted(set(items[protocol]["character"])):
            own = torch.tensor([c == character for c in items[protocol]["character"]])
            for score in (-eyes, mouth, turn):
                rows.append((protocol, int(torch.where(own, torch.nan_to_num(score, nan=-1e9), -torch.inf).argmax())))
    return rows


def write_strip(items: dict, rows: list[tuple[str, int]], path: Path) -> None:
    """portrait | driving | output | target for each row, upscaled to at least 128 px, written atomically."""
    tiles = [items[p][f"image/{key}"][i] for p, i in rows for key in ("source", "driving", "output", "target")]
    grid = make_grid(torch.stack(tiles).clamp(0, 1), nrow=4, padding=2, pad_value=1.0)
    factor = max(1, 128 // tiles[0].shape[-1])
    if factor > 1:
        grid = F.interpolate(grid[None], scale_factor=factor, mode="nearest")[0]
    with atomic_open(path, "wb") as handle:
        save_image(grid, handle, format="png")


@torch.inference_mode()
def frames_per_second(model, portrait: torch.Tensor, driving: torch.Tensor, frames: int = 30) -> float:
    """Networks-only animation speed, batch 1: ``portrait`` is described once, then per frame the ``driving`` frame
    (both ``1×3×S×S``; real frames, since ECC's iterations with ``registration`` depend on the content) is described,
    registered and animated."""
    model.eval()
    portrait, driving = portrait.to(model.device), driving.to(model.device)
    prepared = model.prepare(portrait)
    for _ in range(3):
        model.animate_frame(prepared, driving)
    start = time.perf_counter()
    for _ in range(frames):
        model.animate_frame(prepared, driving)
    return frames / (time.perf_counter() - start)


def under(value: float, floor: float) -> str:
    return f"{value:.4f} ({100 * (1 - value / floor):+.0f} %)"


def markdown_table(columns: list[str], rows: list[list[str]]) -> None:
    """Print one Markdown table."""
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def print_table(results: list[dict], held_out: list[str]) -> None:
    """Markdown tables (after the floors and the flow ceiling, scored with the first run): self/face against their
    floors with cross-identity in ``animate``'s transfer (mean and worst portrait), cross-identity per held-out
    character in every transfer, and (for parameter descriptors) the scores when driven by the true
    parameters."""
    first = results[0]["scores"]
    print(f"\nheld-out characters: {', '.join(held_out)}; floors: self {first['self/l1/floor']:.4f}, "
          f"face (self) {first['self/face/floor']:.4f}, face (cross) {first['cross/face/floor']:.4f}")
    print("a warp that reads the target (optical flow; about the ceiling of warping generators): "
          + ", ".join(f"{label} {under(first[f'{p}/{m}/flow'], first[f'{p}/{m}/floor'])}"
                      for label, p, m in (("self", "self", "l1"), ("face (self)", "self", "face"), ("cross", "cross", "l1"), ("face (cross)", "cross", "face"))))
    if "self/l1/affine" in first:
        print("registration alone (the driver's ECC affine, no network; relative in cross): "
              + ", ".join(f"{label} {under(first[f'{p}/{m}/affine'], first[f'{p}/{m}/floor'])}"
                          for label, p, m in (("self", "self", "l1"), ("face (self)", "self", "face"), ("cross", "cross", "l1"), ("face (cross)", "cross", "face")))
              + "; cross per portrait " + ", ".join(f"{c} {under(first[f'cross/l1/affine/{c}'], first[f'cross/l1/floor/{c}'])}" for c in held_out))

    def cell(s: dict, protocol: str, metric: str, kind: str, character: str = "") -> str:
        suffix = f"/{character}" if character else ""
        return under(s[f"{protocol}/{metric}/{kind}{suffix}"], s[f"{protocol}/{metric}/floor{suffix}"])

    def worst(s: dict, kind: str) -> str:
        character = max(held_out, key=lambda c: s[f"cross/l1/{kind}/{c}"] / s[f"cross/l1/floor/{c}"])
        return f"{cell(s, 'cross', 'l1', kind, character)} {character}"

    markdown_table(["run", "steps", "self L1 (under floor)", "face L1, self", "cross (animate's transfer)", "worst portrait",
                    "face L1, cross", "cross, own motion (worst)", "fps 256²"],
                   [[r["name"], str(r["steps"]), cell(r["scores"], "self", "l1", "abs"), cell(r["scores"], "self", "face", "abs"),
                     f"{r['cross_kind']}: {cell(r['scores'], 'cross', 'l1', r['cross_kind'])}", worst(r["scores"], r["cross_kind"]),
                     cell(r["scores"], "cross", "face", r["cross_kind"]), f"{cell(r['scores'], 'cross', 'l1', 'own')} ({worst(r['scores'], 'own')})",
                     f"{r['fps']:.1f}"] for r in results])
    markdown_table(["run", "portrait", "cross floor", "abs", "rel", "rel+scale", "own motion (reads the target)"],
                   [[r["name"], c, f"{r['scores'][f'cross/l1/floor/{c}']:.4f}", *(cell(r["scores"], "cross", "l1", k, c) for k in ("abs", "rel", "rel+scale", "own"))]
                    for r in results for c in held_out])
    driven = [r for r in results if "self/l1/params" in r["scores"]]
    if driven:
        print("\ndriven by the true parameters (landmarks as read):")
        markdown_table(["run", "self L1", "face L1, self", "cross L1", "face L1, cross"],
                       [[r["name"], *(cell(r["scores"], p, m, "params") for p in ("self", "cross") for m in ("l1", "face"))] for r in driven])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="rendered Live2D clips (python -m lightning_app.render)")
    parser.add_argument("--run", action="append", help=f"NAME=CONFIG[,CONFIG...] [overrides]; default: {' | '.join(DEFAULT_RUNS)}")
    parser.add_argument("--held-out", nargs="+", default=list(DEFAULT_HELD_OUT), help="characters no run trains on (default: the default split)")
    parser.add_argument("--budget", type=float, default=480.0, help="training seconds per run")
    parser.add_argument("--size", type=int, default=64, help="image size")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-clips", type=int, default=20, help="held-out clips per protocol (characters in turn; 4 each for the default split)")
    parser.add_argument("--eval-frames", type=int, default=60, help="frames per evaluation clip")
    parser.add_argument("--fps-size", type=int, default=256, help="image size of the speed measurement")
    parser.add_argument("--out", type=Path, default=Path("logs/quality"), help="quality.json and strips")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.budget <= 0 or args.size <= 0 or args.batch <= 0:
            raise UserFacingError(f"--budget, --size and --batch must be positive, got {args.budget}, {args.size}, {args.batch}")
        if not args.data.is_dir():
            raise UserFacingError(f"--data {str(args.data)!r} is not a folder; render clips with python -m lightning_app.render --models ../shared/live2d --out {args.data}")
        runs = [Run.parse(spec) for spec in (args.run or DEFAULT_RUNS)]
        if len({r.name for r in runs}) != len(runs):
            raise UserFacingError("--run names must differ")
        results, strips = [], None
        evaluation_guess = 60.0
        for number, run in enumerate(runs, 1):
            torch.manual_seed(args.seed)
            model, datamodule = build(run, args)
            label = f"[{number}/{len(runs)}] {run.name}"
            progress = PlainProgress(label, args.budget, (len(runs) - number) * (args.budget + evaluation_guess) + evaluation_guess)
            print(f"{label}: training for {args.budget:.0f} s at {args.size}², batch {args.batch}", flush=True)
            trainer = train(model, datamodule, args.budget, progress)
            steps = trainer.global_step
            args.out.mkdir(parents=True, exist_ok=True)
            with atomic_path(args.out / f"{run.name}.ckpt") as path:
                trainer.save_checkpoint(path, weights_only=True)  # the model only: for cli.py test and animate, not for resuming
            started = time.monotonic()
            items = evaluate(model, datamodule, args.eval_clips, args.eval_frames, flow_ceiling=number == 1)
            strips = strips or strip_indices(items)
            write_strip(items, strips, args.out / f"strip_{run.name}.png")
            first_pair = [F.interpolate(items["self"][f"image/{key}"][:1], size=args.fps_size, mode="bilinear", align_corners=False)
                          for key in ("source", "driving")]
            fps = frames_per_second(model, *first_pair)
            evaluation_guess = time.monotonic() - started
            results.append({"name": run.name, "configs": run.configs, "overrides": run.overrides, "steps": steps, "fps": fps,
                            "cross_kind": transfer_kind(model), "scores": summarise(items)})
            print(f"{label}: {steps} steps; self L1 {results[-1]['scores']['self/l1/abs']:.4f} (floor {results[-1]['scores']['self/l1/floor']:.4f})", flush=True)
            settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
            atomic_write_text(args.out / "quality.json", json.dumps({"settings": settings, "strip_rows": strips, "results": results}, indent=1))
        print_table(results, args.held_out)
        print(f"\nwrote {args.out / 'quality.json'}, <run>.ckpt and strip_<run>.png (rows per held-out character: closed eyes, "
              "open mouth, head turn; self then cross)")


if __name__ == "__main__":
    main()
