"""Faults that must never pass silently: a diverging run stops (or skips its bad steps) with the step and the terms
named, no checkpoint with non-finite weights is written, and none is loaded; files written atomically are as
readable as ordinary ones; rendering workers do not outlive a killed parent; a run killed with SIGKILL resumes
exactly; bad settings, paths, names and checkpoint kinds are one line before any output folder."""

import os
import random
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from callbacks import EvaluationReport
from conftest import ROOT, run_cli, run_cli_process, tiny_args, write_puppet_clips
from core.errors import CheckpointError, NonFiniteError, UserFacingError
from core.files import atomic_path, atomic_write_text
from core.vocabulary import PARAMETER_NAMES
from datamodules.face_landmarks import FaceTracker
from datamodules.live2d.clips import ClipInfo, write_clip
from lightning_app.animate import read_portrait
from lightning_app.cli import AnimatorCLI, main
from lightning_app.import_video import main as import_main
from lightning_app.render import main as render_main
from modules.animator_checkpoint import load_animator, save_animator
from test_live2d import MODELS, needs_models


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


def children(pid: int) -> set[int]:
    """Live (not zombie) processes whose parent is ``pid``."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid) and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            if (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                living.add(pid)
        except OSError:
            pass
    return living


def kill_and_watch_workers(command: list[str], ready: Callable[[subprocess.Popen], bool]) -> set[int]:
    """Start ``command``, wait until ``ready(process)`` (its workers have started working), SIGKILL it; the
    child processes still alive 10 s later."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 180
        while not (working := ready(process)) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
        spawned = children(process.pid)
        assert working and process.poll() is None, f"its workers did not start working; exit status {process.poll()}"
    finally:
        process.kill()
        process.wait()
    deadline = time.monotonic() + 10
    while alive(spawned) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(spawned)


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)")


@needs_proc
def test_render_pool_workers_die_with_a_killed_parent():
    script = ("import sys, time; sys.path.insert(0, '.'); from datamodules.live2d.render_process import render_pool; "
              "pool = render_pool(2); [f.result() for f in [pool.submit(time.sleep, 1) for _ in range(2)]]; "
              "[pool.submit(time.sleep, 120) for _ in range(2)]; print('working', flush=True); time.sleep(120)")
    survivors = kill_and_watch_workers([sys.executable, "-c", script], ready=lambda process: process.stdout.readline().strip() == "working")  # blocks until printed
    assert not survivors, f"workers {survivors} outlived their parent"


@needs_proc
@needs_models
def test_killing_render_leaves_no_worker(tmp_path):
    command = [sys.executable, "-m", "lightning_app.render", "--models", str(MODELS), "--characters", "Hiyori", "Mark",
               "--out", str(tmp_path / "clips"), "--size", "64", "--clips", "20", "--replays", "0", "--workers", "2"]
    survivors = kill_and_watch_workers(command, ready=lambda _: len(list((tmp_path / "clips").glob("*/*/clip.json"))) >= 2)
    assert not survivors, f"render workers {survivors} outlived the killed render"


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("workers", [0, 2])
def test_kill_9_at_a_random_step_then_resume_ends_with_the_uninterrupted_weights(tmp_path, workers):
    steps, kill_at = 12, int(os.environ.get("KILL_AT", random.randint(3, 11)))  # KILL_AT=n repeats a failure; resumes from the last even step ≤ kill_at
    common = ["--trainer.deterministic=true", "--trainer.val_check_interval=2", f"--data.init_args.num_workers={workers}",
              "--data.init_args.train_pairs=24"]  # epochs of 6 batches: the kill and the resume fall mid-epoch
    straight = run_cli_process(tiny_args(tmp_path / "straight", steps=steps, extra=common), cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-2000:]
    killed = run_cli_process(tiny_args(tmp_path / "killed", steps=steps, extra=[*common, "--trainer.callbacks+=conftest.KillAt",
                                                                                 f"--trainer.callbacks.step={kill_at}"]),
                             cwd=tmp_path, env={"PYTHONPATH": str(ROOT / "tests")})
    assert killed.returncode == -9, f"not killed at step {kill_at}: {killed.stderr[-2000:]}"
    resumed = run_cli_process(tiny_args(tmp_path / "killed", steps=steps, extra=[*common, "--ckpt_path=last"]), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    expected = final_weights(next((tmp_path / "straight" / "logs" / "run").glob("version_*")))
    got = final_weights(sorted((tmp_path / "killed" / "logs" / "run").glob("version_*"))[-1])
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert not different, f"killed at step {kill_at}, resumed: {len(different)} tensors differ, first {different[0]}"


def one_error_line(command, args: list[str], capsys) -> str:
    """The single ``error:`` line (exit status 2) that ``command(args)`` ends with."""
    with pytest.raises(SystemExit) as exc:
        command(args)
    assert exc.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Seed set" not in line]
    assert len(errors) == 1 and errors[0].startswith("error:"), errors
    return errors[0]


@pytest.mark.parametrize("extra, expected", [
    (["--data=datamodules.Live2DClipDataModule", "--data.init_args.root={tmp}/nothing"], "no clips under"),
    (["--data.init_args.batch_size=0"], "PuppetDataModule: batch_size must be at least 1, got 0"),
    (["--data.init_args.image_size=0"], "PuppetDataModule: image_size must be at least 16, got 0"),
    (["--data.init_args.image_size=100"], "FiLMUNet needs frames whose sides are multiples of 32, got 100×100"),
    (["--trainer.default_root_dir={tmp}/a_file"], "is a file, not a folder"),
    (["--ckpt_path={tmp}/evaluator.ckpt"], "is an evaluator checkpoint, not one of AnimatorModule"),
])
def test_bad_settings_are_one_line_before_any_output_folder(tmp_path, capsys, extra, expected):
    (tmp_path / "a_file").write_text("")
    torch.save({"hyper_parameters": {"encoder": "resnet18", "embed_dim": 64}, "state_dict": {}}, tmp_path / "evaluator.ckpt")
    message = one_error_line(main, tiny_args(tmp_path, extra=[e.format(tmp=tmp_path) for e in extra]), capsys)
    assert expected in message
    assert not (tmp_path / "logs").exists()


def test_commands_refuse_bad_paths_names_and_kinds_in_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    assert "--frames must be at least 1" in one_error_line(render_main, ["--models", str(tmp_path), "--out", str(tmp_path / "d"), "--frames", "0"], capsys)
    assert "which is a file" in one_error_line(render_main, ["--models", str(tmp_path), "--out", str(tmp_path / "a_file" / "d")], capsys)
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(2):
        cv2.imwrite(str(frames / f"{i:03d}.png"), np.full((40, 40, 3), 128, np.uint8))
    message = one_error_line(import_main, ["--input", str(frames), "--character", "../escaped", "--out", str(tmp_path / "data"), "--size", "32"], capsys)
    assert "is not a folder name" in message and not (tmp_path / "escaped").exists() and not (tmp_path / "data").exists()
    torch.save({"hyper_parameters": {"encoder": "resnet18"}, "state_dict": {}}, tmp_path / "evaluator.ckpt")
    with pytest.raises(CheckpointError, match="is an evaluator checkpoint; an animator checkpoint is needed"):
        load_animator(tmp_path / "evaluator.ckpt")
    with pytest.raises(UserFacingError, match="not a MediaPipe .task bundle"):
        FaceTracker(tmp_path / "a_file")
    torch.save({"hyper_parameters": {"descriptor": {}, "backbone": {}}, "state_dict": {}}, tmp_path / "animator.ckpt")
    with pytest.raises(CheckpointError, match="evaluator .* is an animator checkpoint; an evaluator checkpoint is needed"):
        EvaluationReport(evaluator=str(tmp_path / "animator.ckpt"))
    clips = write_puppet_clips(tmp_path / "clips", {"Ann": 1, "Bob": 2}, frames=4)
    live2d = ["--data=datamodules.Live2DClipDataModule", f"--data.init_args.root={clips}"]
    assert "held_out names characters not in" in one_error_line(main, tiny_args(tmp_path, extra=[*live2d, "--data.init_args.held_out=[Nobody]"]), capsys)
    assert "some but not all" in one_error_line(main, tiny_args(tmp_path, extra=[*live2d, "--data.init_args.held_out=[Ann,Bob]"]), capsys)
    vit_warping = ["--model.descriptor.init_args.pretrained=false", "--model.backbone=modules.backbones.WarpingGenerator"]
    assert "WarpingGenerator needs a descriptor that locates points" in one_error_line(main, tiny_args(tmp_path, config="dino.yaml", extra=vit_warping), capsys)
    assert not (tmp_path / "logs").exists()


def test_a_portrait_far_below_the_model_size_is_warned_about(tmp_path):
    cv2.imwrite(str(tmp_path / "tiny.png"), np.full((1, 1, 3), 200, np.uint8))
    with pytest.warns(UserWarning, match=r"is 1×1 pixels, far below the model's 64²"):
        assert read_portrait(tmp_path / "tiny.png", 64).shape == (1, 3, 64, 64)
