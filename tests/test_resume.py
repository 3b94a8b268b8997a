"""Checkpoints: exact resume, resume on 2-process DDP, and clear errors for bad files."""

import os
from pathlib import Path

import pytest
import torch

from conftest import ROOT, metric_by_step, run_cli, run_cli_process, tiny_args
from core.checkpoint_files import verify_checkpoint
from core.errors import CheckpointError
from lightning_app.checkpoints import AtomicCheckpointIO
from lightning_app.cli import main

STEPS = 12


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An uninterrupted 12-step run, and the same run stopped after its step-6 checkpoint."""
    root = tmp_path_factory.mktemp("resume")
    straight = run_cli(tiny_args(root / "straight", steps=STEPS))
    stopped = run_cli(tiny_args(root / "resumed", steps=STEPS, extra=["--trainer.callbacks+=conftest.StopAfterValidationAt", "--trainer.callbacks.step=6"]))
    assert stopped.trainer.global_step == 6
    return root, Path(straight.trainer.log_dir), Path(stopped.trainer.log_dir)


def test_resume_from_last_continues_steps_and_schedule_exactly(runs):
    root, straight_dir, stopped_dir = runs
    resumed = run_cli(tiny_args(root / "resumed", steps=STEPS, extra=["--ckpt_path=last"]))
    resumed_dir = Path(resumed.trainer.log_dir)
    assert resumed_dir != stopped_dir and resumed.trainer.global_step == STEPS
    straight_lr = metric_by_step(straight_dir, "train/lr")
    resumed_lr = metric_by_step(resumed_dir, "train/lr")
    assert sorted(resumed_lr) == list(range(6, STEPS))  # no step repeated, none skipped
    assert [resumed_lr[s] for s in range(6, STEPS)] == [straight_lr[s] for s in range(6, STEPS)]
    checkpoint = torch.load(resumed_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == STEPS
    assert checkpoint["optimizer_states"][0]["state"], "optimizer moments must be saved"
    states = {key.split("{")[0]: value for key, value in checkpoint["callbacks"].items()}
    assert states["LRSchedule"]["schedulers"][0]["last_epoch"] == STEPS
    assert "clipped_steps" in states["GradientNormClipping"] and "peak_bytes" in states["MemoryMonitor"]


def test_last_checkpoint_is_the_newest_even_when_validation_stops_improving(tmp_path):
    frozen = run_cli(tiny_args(tmp_path, steps=4, extra=["--model.optimizer.init_args.lr=0", "--trainer.val_check_interval=2"]))
    checkpoints = Path(frozen.trainer.log_dir) / "checkpoints"
    best = [p.name for p in checkpoints.glob("best-*.ckpt")]
    assert best == ["best-step000002-l1" + best[0].split("-l1")[1]], f"with lr 0 the step-2 validation stays the best: {best}"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False, map_location="cpu")["global_step"] == 4


@pytest.mark.skipif(os.cpu_count() is not None and os.cpu_count() < 2, reason="needs 2 CPU cores for 2 processes")
def test_single_process_checkpoint_resumes_on_two_process_ddp(runs, tmp_path):
    root, straight_dir, stopped_dir = runs
    ckpt = next((stopped_dir / "checkpoints").glob("last.ckpt"))
    args = tiny_args(tmp_path, steps=STEPS, extra=[
        "--trainer.accelerator=cpu", "--trainer.devices=2", "--trainer.strategy=ddp", f"--ckpt_path={ckpt}"])
    result = run_cli_process(args, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "world_size=2" in result.stderr or "MEMBER: 2/2" in result.stderr or "distributed_backend=gloo" in result.stderr
    run_dir = next((tmp_path / "logs" / "run").glob("version_*"))
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    assert checkpoint["global_step"] == STEPS
    straight_lr = metric_by_step(straight_dir, "train/lr")
    ddp_lr = metric_by_step(run_dir, "train/lr")
    assert [ddp_lr[s] for s in range(6, STEPS)] == [straight_lr[s] for s in range(6, STEPS)]


def run_main(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_truncated_and_corrupt_checkpoints_are_clear_errors(runs, tmp_path, capsys):
    _, _, stopped_dir = runs
    good = (stopped_dir / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    err = run_main(tiny_args(tmp_path, extra=[f"--ckpt_path={truncated}"]), capsys)
    assert "truncated.ckpt" in err and "truncated" in err and "Traceback" not in err
    flipped = bytearray(good)
    middle = len(flipped) // 2
    flipped[middle : middle + 64] = bytes(64)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(bytes(flipped))
    err = run_main(tiny_args(tmp_path, extra=[f"--ckpt_path={corrupt}"]), capsys)
    assert "corrupt.ckpt" in err and "corrupt" in err
    err = run_main(tiny_args(tmp_path, subcommand="validate", extra=[f"--ckpt_path={tmp_path / 'nope.ckpt'}"]), capsys)
    assert "nope.ckpt" in err and "does not exist" in err
    err = run_main(tiny_args(tmp_path / "empty", extra=["--ckpt_path=last"]), capsys)
    assert "no last.ckpt" in err


def test_atomic_checkpoint_io_never_leaves_a_partial_file(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "weights": torch.ones(3)}, path)
    assert verify_checkpoint(path) == path

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, path)
    assert torch.load(path, weights_only=False)["step"] == 1  # the previous checkpoint survives
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    with pytest.raises(CheckpointError, match="empty"):
        (tmp_path / "empty.ckpt").write_bytes(b"")
        verify_checkpoint(tmp_path / "empty.ckpt")
