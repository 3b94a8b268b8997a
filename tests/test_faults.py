"""Faults that must never pass silently: a diverging run stops (or skips its bad steps) with the step and the terms
named, no checkpoint with non-finite weights is written, and none is loaded; files written atomically are as
readable as ordinary ones."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_cli, run_cli_process, tiny_args
from datamodules.live2d.clips import ClipInfo, write_clip
from datamodules.parameters import PARAMETER_NAMES
from lightning_app.checkpoints import load_animator, save_animator
from lightning_app.cli import AnimatorCLI
from lightning_app.files import atomic_path, atomic_write_text
from modules.errors import CheckpointError, NonFiniteError


def checkpoints(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "logs").glob("**/*.ckpt"))


def test_a_diverging_run_stops_with_the_step_and_terms_and_saves_nothing(tmp_path):
    result = run_cli_process(tiny_args(tmp_path, steps=12, extra=["--model.optimizer.init_args.lr=1e6"]), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "training stopped at step" in errors[0] and "not finite" in errors[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    for file in checkpoints(tmp_path):  # whatever was saved before the divergence is finite
        state = torch.load(file, map_location="cpu", weights_only=False)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), file


def built(tmp_path: Path, extra: list[str]):
    """The model and data of a tiny puppet config, not trained."""
    cli = AnimatorCLI(args=tiny_args(tmp_path, extra=extra)[1:], run=False)
    cli.datamodule.setup("fit")
    return cli.model, cli.datamodule


def test_skip_leaves_out_non_finite_steps_counts_them_and_keeps_weights_finite(tmp_path):
    model, data = built(tmp_path, ["--model.non_finite=skip"])
    batch = next(iter(data.train_dataloader()))
    batch["driving"][0, 0, 0, 0] = float("nan")  # one poisoned pixel makes the reconstruction NaN
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.training_step(batch, 0) is None and model.skipped_steps == 1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a skipped step changes nothing"
    model.max_skipped_steps = 1
    with pytest.raises(NonFiniteError, match=r"loss terms .*reconstruction.* after 1 skipped steps"):
        model.training_step(batch, 1)


def test_non_finite_gradients_skip_the_update_or_stop(tmp_path):
    model, _ = built(tmp_path, ["--model.non_finite=skip"])
    parameter = next(model.parameters())
    parameter.grad = torch.full_like(parameter, float("inf"))
    model.on_before_optimizer_step(torch.optim.SGD(model.parameters(), lr=1.0))
    assert all(p.grad is None for p in model.parameters()) and model.skipped_steps == 1
    model.non_finite = "stop"
    parameter.grad = torch.full_like(parameter, float("nan"))
    with pytest.raises(NonFiniteError, match="gradients of 1 parameters are not finite"):
        model.on_before_optimizer_step(torch.optim.SGD(model.parameters(), lr=1.0))


def test_a_checkpoint_with_non_finite_weights_is_neither_written_nor_loaded(tmp_path):
    cli = run_cli(tiny_args(tmp_path, steps=2))
    model = cli.model
    good = cli.trainer.checkpoint_callback.best_model_path
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="not saving a checkpoint"):
        cli.trainer.save_checkpoint(tmp_path / "nan.ckpt")
    assert not (tmp_path / "nan.ckpt").exists()
    save_animator(model, tmp_path / "old-nan.ckpt")  # as a diverged run of an older version would have left it
    with pytest.raises(CheckpointError, match=r"old-nan.ckpt.*weights are not finite"):
        load_animator(tmp_path / "old-nan.ckpt")
    result = run_cli_process(tiny_args(tmp_path, subcommand="test", extra=[f"--ckpt_path={tmp_path / 'old-nan.ckpt'}"]), cwd=tmp_path)
    assert result.returncode == 2 and "weights are not finite" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert load_animator(good) is not None


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_atomic_writes_get_the_permissions_of_an_ordinary_write(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.json", "{}")
        with atomic_path(tmp_path / "b.mp4") as path:
            path.write_bytes(b"x")
        info = ClipInfo("Someone", "random_000", "random", 0, 30.0, 8, 2, PARAMETER_NAMES, ())
        clip = write_clip(tmp_path / "clips", info, {"frames": np.zeros((2, 8, 8, 4), np.uint8), "params": np.zeros((2, len(PARAMETER_NAMES)), np.float32)})
    finally:
        os.umask(previous)
    for file in (tmp_path / "a.json", tmp_path / "b.mp4", clip / "frames.npy", clip / "clip.json"):
        assert stat.S_IMODE(file.stat().st_mode) == 0o666 & ~umask, file
    assert stat.S_IMODE(clip.stat().st_mode) == 0o777 & ~umask
