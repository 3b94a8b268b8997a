"""Callbacks on their own: clipping, schedules, memory advice, sample grids."""

import math
import warnings
from types import SimpleNamespace

import pytest
import torch

from callbacks import GradientNormClipping, LRSchedule, MemoryMonitor, RunProgress
from callbacks.run_progress import duration, progress_line
from conftest import run_cli_process, tiny_args
from lightning_app.cli import AnimatorCLI


class Recorder:
    """Stands in for a LightningModule's logging."""

    def __init__(self) -> None:
        self.logged: dict[str, float] = {}
        self.device = torch.device("cpu")

    def log(self, name, value, **kwargs) -> None:
        self.logged[name] = float(value)

    def log_dict(self, values, **kwargs) -> None:
        self.logged.update({k: float(v) for k, v in values.items()})


def test_clipping_bounds_the_norm_and_logs_the_norm_before_clipping():
    layer = torch.nn.Linear(4, 4)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    (layer(torch.ones(2, 4)) * 1000).sum().backward()
    before = torch.nn.utils.get_total_norm([p.grad for p in layer.parameters()])
    recorder = Recorder()
    callback = GradientNormClipping(max_norm=1.0)
    callback.on_before_optimizer_step(None, recorder, optimizer)
    after = torch.nn.utils.get_total_norm([p.grad for p in layer.parameters()])
    assert recorder.logged["train/grad_norm"] == pytest.approx(before.item(), rel=1e-5)
    assert after.item() == pytest.approx(1.0, rel=1e-4) and recorder.logged["train/grad_clipped"] == 1.0
    assert callback.state_dict()["clipped_steps"] == 1


def run_schedule(callback: LRSchedule, steps: int, lr: float = 1.0) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    trainer = SimpleNamespace(optimizers=[optimizer], global_step=0, estimated_stepping_batches=steps)
    callback.on_fit_start(trainer, Recorder())
    lrs = []
    for step in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        trainer.global_step = step + 1
        callback.on_train_batch_end(trainer, Recorder(), None, None, step)
    return lrs


def test_cosine_with_warmup_rises_linearly_then_decays_to_the_floor():
    lrs = run_schedule(LRSchedule(kind="cosine", warmup_steps=10, min_lr_ratio=0.1, warmup_start_ratio=0.1), steps=110)
    assert lrs[0] == pytest.approx(0.1) and lrs[5] == pytest.approx(0.55) and lrs[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[60] == pytest.approx(0.55, abs=0.01) and lrs[-1] == pytest.approx(0.1, abs=0.01)


def test_warm_restarts_jump_back_to_the_peak():
    lrs = run_schedule(LRSchedule(kind="cosine_restarts", warmup_steps=0, restart_period=10, restart_mult=2, min_lr_ratio=0.0), steps=40)
    assert lrs[0] == pytest.approx(1.0) and lrs[9] < 0.05 and lrs[10] == pytest.approx(1.0)
    assert lrs[29] < 0.05 and lrs[30] == pytest.approx(1.0)  # second cycle is twice as long


def test_schedule_state_resumes_exactly():
    straight = run_schedule(LRSchedule(warmup_steps=5), steps=30)
    first = LRSchedule(warmup_steps=5)
    run_schedule(first, steps=30)  # to build it; then rewind to step 12 by replaying
    first = LRSchedule(warmup_steps=5)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    trainer = SimpleNamespace(optimizers=[optimizer], global_step=0, estimated_stepping_batches=30)
    first.on_fit_start(trainer, Recorder())
    for step in range(12):
        trainer.global_step = step + 1
        first.on_train_batch_end(trainer, Recorder(), None, None, step)
    state = first.state_dict()
    resumed = LRSchedule(warmup_steps=5)
    resumed.load_state_dict(state)
    optimizer2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    optimizer2.load_state_dict(optimizer.state_dict())
    trainer2 = SimpleNamespace(optimizers=[optimizer2], global_step=12, estimated_stepping_batches=30)
    resumed.on_fit_start(trainer2, Recorder())
    rest = []
    for step in range(12, 30):
        rest.append(optimizer2.param_groups[0]["lr"])
        trainer2.global_step = step + 1
        resumed.on_train_batch_end(trainer2, Recorder(), None, None, step)
    assert rest == straight[12:]


def fake_readings(fraction: float):
    return lambda device: {"peak_allocated_mb": fraction * 800, "peak_reserved_mb": fraction * 1000, "total_mb": 1000.0}


def test_memory_monitor_warns_once_and_advises_mixed_precision_on_a_full_gpu(monkeypatch):
    monitor = MemoryMonitor(interval=1, warn_fraction=0.8, advise_fraction=0.5)
    monkeypatch.setattr(monitor, "measure", fake_readings(0.9))
    trainer = SimpleNamespace(global_step=1)
    with pytest.warns(UserWarning, match="90% of the device"):
        monitor.on_train_batch_end(trainer, Recorder(), None, None, 0)
    trainer.global_step = 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second warning would raise here
        monitor.on_train_batch_end(trainer, Recorder(), None, None, 1)
    assert monitor.warned and monitor.state_dict()["warned"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert monitor.advise(torch.device("cuda"), "32-true")["advise_precision"] == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert monitor.advise(torch.device("cuda"), "32-true")["advise_precision"] == "16-mixed"
    assert monitor.advise(torch.device("cuda"), "bf16-mixed")["advise_precision"] is None


def test_memory_monitor_does_not_advise_when_memory_is_ample_or_on_cpu(monkeypatch):
    monitor = MemoryMonitor(advise_fraction=0.5)
    monkeypatch.setattr(monitor, "measure", fake_readings(0.2))
    assert monitor.advise(torch.device("cuda"), "32-true")["advise_precision"] is None
    cpu = MemoryMonitor().advise(torch.device("cpu"), "32-true")
    assert cpu["advise_precision"] is None and cpu["peak_mb"] > 10 and "CPU" in cpu["advice"]


def test_progress_line_counts_the_whole_run_and_its_eta():
    line = progress_line(step=300, total=3000, first_step=100, elapsed=100.0, metrics={"train/loss": 0.041234, "v": "x"})
    assert line == "step 300/3000 (10 %) · 2.00 steps/s · elapsed 1:40 · ETA 22:30 · train/loss 0.04123 · v x"
    assert progress_line(5, math.inf, 0, 2.0, {}) == "step 5 · 2.50 steps/s · elapsed 0:02"
    assert duration(3725) == "1:02:05" and duration(math.nan) == "?"


def test_plain_progress_lines_when_stdout_is_not_a_terminal(tmp_path):
    args = tiny_args(tmp_path, steps=6, extra=["--trainer.enable_progress_bar=true", "--trainer.callbacks+=callbacks.RunProgress",
                                               "--trainer.callbacks.interval=0.001"])
    result = run_cli_process(args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
    steps = [int(line.split()[1].split("/")[0]) for line in lines]
    assert all(line.split()[1].endswith("/6") for line in lines) and steps == sorted(steps) and steps[-1] == 6, lines
    assert len(lines) >= 3 and "ETA" in lines[-1] and "Epoch" not in result.stdout + result.stderr


def test_the_cli_adds_run_progress_unless_bars_are_off(tmp_path):
    with_bar = AnimatorCLI(args=tiny_args(tmp_path, extra=["--trainer.enable_progress_bar=true"])[1:], run=False)
    assert isinstance(with_bar.trainer.progress_bar_callback, RunProgress)
    assert AnimatorCLI(args=tiny_args(tmp_path)[1:], run=False).trainer.progress_bar_callback is None
