"""``EvaluationReport``: anime-specific metrics for ``cli.py test`` and a report of every test metric.

Per test group (``self/held_out``, ``cross_relative/train``, … see :class:`~modules.AnimatorModule`) and with a
trained evaluator checkpoint (:mod:`modules.evaluator`):

* ``akd`` — AKD-anime: mean pixel distance between the evaluator's keypoints on the output and on the target;
  ``akd_floor``: its keypoints on the real target vs the rig's keypoints (the detector's own error);
* ``ape`` — APE: mean absolute error between the evaluator's parameters of the output and the true parameters
  (in units of each parameter's range); ``ape_floor``: the same on the real target;
* ``aed`` — AED-anime: ``1 − cos`` between the identity embeddings of output and portrait; ``aed_floor``:
  target vs portrait (the same character in another pose);
* ``jitter`` — mean frame-to-frame keypoint motion of the output minus that of the target, over each clip;
* ``lpips`` where torchvision's AlexNet weights are already on disk (never downloaded here).

At the end: a table (group × metric, with the module's L1/PSNR/SSIM) printed, written as ``evaluation.json``
and ``evaluation.csv`` in the run folder, logged (a W&B table under W&B), and for the first ``sample_clips``
clips of each group a video and a still grid of portrait | driving | output | target.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from rich.console import Console
from rich.table import Table
from torch import Tensor
from torchmetrics import MeanMetric

from callbacks.clip_writer import ClipSamples
from core.checkpoint_files import expect_checkpoint_kind
from core.files import atomic_write_text
from core.run_folder import run_folder

LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"  # torchvision's AlexNet weights, as torch.hub caches them


def lpips_available() -> bool:
    """Whether LPIPS can run without a download (its AlexNet weights are in torch.hub's cache)."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE).is_file()


class EvaluationReport(L.Callback):
    """Evaluator metrics, samples and the results table for ``test``.

    Args:
        evaluator: an :class:`~modules.evaluator.EvaluatorModule` checkpoint; without it only the image metrics
            are reported (and the report says so).
        sample_clips: clips per group written as sample videos and grids.
        fps: frame rate of the sample videos.
    """

    def __init__(self, evaluator: str | None = None, sample_clips: int = 2, fps: float = 15.0) -> None:
        if evaluator is not None:
            expect_checkpoint_kind(evaluator, "evaluator", "evaluator")  # when the config is built, before any run folder
        self.evaluator_path, self.sample_clips, self.fps = evaluator, sample_clips, fps
        self.evaluator = None
        self.lpips = None
        self.notes: list[str] = []

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from modules.evaluator import EvaluatorModule

        self.notes = []
        if self.evaluator_path:
            self.evaluator = EvaluatorModule.load_from_checkpoint(self.evaluator_path, map_location=pl_module.device).eval()
        else:
            self.notes.append("AKD/APE/AED/jitter skipped: no evaluator checkpoint (train one: python -m lightning_app.train_evaluator)")
        if lpips_available():
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.lpips = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(pl_module.device)
        else:
            self.notes.append(f"LPIPS skipped: {LPIPS_BACKBONE_FILE} not in {Path(torch.hub.get_dir()) / 'checkpoints'} (no downloads at test time)")
        self.means: dict[tuple[str, str], MeanMetric] = {}
        self.tracks: dict[tuple[str, int], dict[int, tuple[Tensor, Tensor]]] = defaultdict(dict)
        self.samples = ClipSamples(self.sample_clips, self.fps)

    def _add(self, group: str, name: str, values: Tensor) -> None:
        key = (group, name)
        if key not in self.means:
            self.means[key] = MeanMetric().to(values.device)
        self.means[key].update(values)

    @torch.no_grad()
    def on_test_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: dict, batch: dict[str, Tensor],
                          batch_idx: int, dataloader_idx: int = 0) -> None:
        target, source = batch["target"], batch["source"]
        real = self.evaluator(torch.cat([target, source])) if self.evaluator is not None else None
        for kind, group in outputs["groups"].items():
            group = group or "pairs"
            prediction = outputs["predictions"][kind]
            if self.lpips is not None:
                self._add(group, "lpips", self.lpips(prediction, target).expand(len(prediction)))
            if real is not None:
                self._evaluator_metrics(group, prediction, batch, real)
            if "sequence" in batch:
                self.samples.add(group, prediction, batch)

    def _evaluator_metrics(self, group: str, prediction: Tensor, batch: dict[str, Tensor], real: dict[str, Tensor]) -> None:
        size = len(prediction)
        out = self.evaluator(prediction)
        target_kp, source_id = real["keypoints"][:size], real["identity"][size:]
        self._add(group, "akd", (out["keypoints"] - target_kp).norm(dim=-1).mean(1))
        true = self.evaluator.parameters_from_default(batch["driving_params"])
        known = ~true.isnan()
        if known.any():
            self._add(group, "ape", (out["parameters"] - true).abs()[known])
            self._add(group, "ape_floor", (real["parameters"][:size] - true).abs()[known])
        self._add(group, "aed", 1.0 - (out["identity"] * source_id).sum(1))
        self._add(group, "aed_floor", 1.0 - (real["identity"][:size] * source_id).sum(1))
        if "target_keypoints" in batch:
            self._add(group, "akd_floor", (target_kp - batch["target_keypoints"]).norm(dim=-1).mean(1))
        if "sequence" in batch:
            for i, (sequence, frame) in enumerate(zip(batch["sequence"].tolist(), batch["frame"].tolist())):
                self.tracks[(group, sequence)][frame] = (out["keypoints"][i].cpu(), target_kp[i].cpu())

    def _jitter(self) -> dict[str, float]:
        per_group: dict[str, list[float]] = defaultdict(list)
        for (group, _), frames in self.tracks.items():
            order = sorted(frames)
            if len(order) < 2:
                continue
            out = torch.stack([frames[t][0] for t in order])
            target = torch.stack([frames[t][1] for t in order])
            per_group[group].append(float((out.diff(dim=0).norm(dim=-1).mean() - target.diff(dim=0).norm(dim=-1).mean())))
        return {group: float(np.mean(values)) for group, values in per_group.items()}

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results: dict[str, dict[str, float]] = defaultdict(dict)
        for key, value in trainer.callback_metrics.items():
            if key.startswith("test/"):
                group, _, metric = key.removeprefix("test/").rpartition("/")
                results[group or "pairs"][metric] = float(value)
        for (group, name), metric in self.means.items():
            results[group][name] = float(metric.compute())
        for group, value in self._jitter().items():
            results[group]["jitter"] = value
        if trainer.is_global_zero:
            self._report(trainer, {g: results[g] for g in sorted(results)})

    @rank_zero_only
    def _report(self, trainer: L.Trainer, results: dict[str, dict[str, float]]) -> None:
        metrics = sorted({m for row in results.values() for m in row}, key=lambda m: (m not in ("l1", "psnr", "ssim"), m))
        folder = run_folder(trainer) / "evaluation"
        folder.mkdir(parents=True, exist_ok=True)
        table = Table(title="test results (AKD px, APE range units, AED 1−cos; *_floor: the evaluator on real frames)")
        table.add_column("group")
        for metric in metrics:
            table.add_column(metric, justify="right")
        for group, row in results.items():
            table.add_row(group, *(f"{row[m]:.4f}" if m in row else "–" for m in metrics))
        Console(width=220).print(table)
        for note in self.notes:
            rank_zero_info(f"note: {note}")
        atomic_write_text(folder / "evaluation.json", json.dumps({"results": results, "notes": self.notes}, indent=1))
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["group", *metrics])
        for group, row in results.items():
            writer.writerow([group, *(row.get(m, "") for m in metrics)])
        atomic_write_text(folder / "evaluation.csv", buffer.getvalue())
        for logger in trainer.loggers:
            logger.log_metrics({f"test/{g}/{m}": v for g, row in results.items() for m, v in row.items() if m not in ("l1", "psnr", "ssim")}, step=trainer.global_step)
            if type(logger).__name__ == "WandbLogger":
                logger.log_table("test/results", columns=["group", *metrics], data=[[g, *(row.get(m) for m in metrics)] for g, row in results.items()])
        self.samples.write(folder)

