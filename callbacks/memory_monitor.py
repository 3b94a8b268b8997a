"""``MemoryMonitor``: peak memory logging, a one-time high-water warning and a mixed-precision advice report."""

from __future__ import annotations

import json
import resource
from typing import Any

import lightning as L
import psutil
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from core.files import atomic_write_text
from core.run_folder import run_folder

_MB = 1024.0**2


class MemoryMonitor(Callback):
    """Track peak memory during fit and say whether mixed precision is advised.

    On CUDA it logs ``memory/peak_allocated_mb`` and ``memory/peak_reserved_mb`` (``torch.cuda`` peak counters);
    on CPU ``memory/rss_mb`` and ``memory/peak_rss_mb`` (process resident set). When the peak passes
    ``warn_fraction`` of the device's memory it warns once. At the end of fit it writes ``report_name`` (JSON)
    into the run folder and prints its advice: on a CUDA run in full precision whose peak passed
    ``advise_fraction``, switch to ``bf16-mixed`` (``16-mixed`` where the GPU lacks bf16).

    Args:
        interval: log at the first step and then every this many optimizer steps.
        warn_fraction: peak fraction of device memory that triggers the one-time warning.
        advise_fraction: peak fraction above which mixed precision is advised.
        report_name: file name of the report in the run folder.
    """

    def __init__(self, interval: int = 50, warn_fraction: float = 0.85, advise_fraction: float = 0.5, report_name: str = "memory_report.json") -> None:
        if interval < 1 or not 0 < warn_fraction <= 1 or not 0 < advise_fraction <= 1:
            raise ValueError("interval must be >= 1; warn_fraction and advise_fraction must be in (0, 1]")
        self.interval, self.warn_fraction, self.advise_fraction, self.report_name = interval, warn_fraction, advise_fraction, report_name
        self.peak_bytes = 0
        self.warned = False
        self.report: dict[str, Any] | None = None
        self._logged_at: int | None = None

    def measure(self, device: torch.device) -> dict[str, float]:
        """Current readings in MB, and the device's total memory, for ``device``."""
        if device.type == "cuda":
            return {
                "peak_allocated_mb": torch.cuda.max_memory_allocated(device) / _MB,
                "peak_reserved_mb": torch.cuda.max_memory_reserved(device) / _MB,
                "total_mb": torch.cuda.get_device_properties(device).total_memory / _MB,
            }
        return {
            "rss_mb": psutil.Process().memory_info().rss / _MB,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0 / _MB,
            "total_mb": psutil.virtual_memory().total / _MB,
        }

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._logged_at is not None and trainer.global_step - self._logged_at < self.interval:
            return
        self._logged_at = trainer.global_step
        readings = self.measure(pl_module.device)
        peak_mb = readings.get("peak_reserved_mb", readings.get("peak_rss_mb", 0.0))
        self.peak_bytes = max(self.peak_bytes, int(peak_mb * _MB))
        pl_module.log_dict({f"memory/{k}": v for k, v in readings.items() if k != "total_mb"}, on_step=True, on_epoch=False)
        fraction = peak_mb / readings["total_mb"]
        if fraction > self.warn_fraction and not self.warned:
            self.warned = True
            rank_zero_warn(
                f"MemoryMonitor: peak memory {peak_mb:.0f} MB is {fraction:.0%} of the device's {readings['total_mb']:.0f} MB "
                f"(threshold {self.warn_fraction:.0%}); consider a smaller batch or mixed precision."
            )

    def advise(self, device: torch.device, precision: str) -> dict[str, Any]:
        """The report: readings, peak fraction and the precision advice for a run on ``device`` at ``precision``."""
        readings = self.measure(device)
        peak_mb = max(self.peak_bytes / _MB, readings.get("peak_reserved_mb", readings.get("peak_rss_mb", 0.0)))
        fraction = peak_mb / readings["total_mb"]
        mixed = any(tag in precision for tag in ("16", "bf16"))
        if device.type != "cuda":
            switch, reason = None, "CPU run: mixed precision saves little memory on CPU and is usually slower there; keep 32-true."
        elif mixed:
            switch, reason = None, f"already training in {precision}."
        elif fraction >= self.advise_fraction:
            switch = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
            reason = f"peak {fraction:.0%} of GPU memory in {precision}: switch to --trainer.precision={switch} to roughly halve activation memory."
        else:
            switch, reason = None, f"peak {fraction:.0%} of GPU memory: full precision fits; bf16-mixed remains an option for speed on tensor-core GPUs."
        return {
            "device": str(device),
            "precision": precision,
            "peak_mb": round(peak_mb, 1),
            "total_mb": round(readings["total_mb"], 1),
            "peak_fraction": round(fraction, 4),
            "warned": self.warned,
            "advise_precision": switch,
            "advice": reason,
            "readings_mb": {k: round(v, 1) for k, v in readings.items()},
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.report = self.advise(pl_module.device, str(trainer.precision))
        folder = run_folder(trainer)  # a collective under DDP: every rank asks
        if trainer.is_global_zero:
            atomic_write_text(folder / self.report_name, json.dumps(self.report, indent=2) + "\n")
            rank_zero_info(f"MemoryMonitor: peak {self.report['peak_mb']:.0f} MB ({self.report['peak_fraction']:.1%}); {self.report['advice']}")

    def state_dict(self) -> dict[str, Any]:
        return {"peak_bytes": self.peak_bytes, "warned": self.warned}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.peak_bytes = int(state_dict.get("peak_bytes", 0))
        self.warned = bool(state_dict.get("warned", False))
