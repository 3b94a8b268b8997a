"""The CLI end to end on puppet data: configs, linking, saved config, loggers, sample grids, errors."""

from pathlib import Path

import pytest
import torch
import yaml

from conftest import CONFIGS, ROOT, metric_by_step, read_metrics, run_cli, run_cli_process, tiny_args
from modules import AnimatorModule


def test_keypoints_config_trains_validates_and_saves_everything(tmp_path):
    cli = run_cli(tiny_args(tmp_path, steps=8, extra=["--model.losses.motion=0.05"]))
    log_dir = Path(cli.trainer.log_dir)
    assert cli.model.image_size == 64 and cli.model.channels == 3  # linked from data
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["data"]["init_args"]["image_size"] == 64
    assert saved["model"]["descriptor"]["class_path"] == "modules.descriptors.KeypointDescriptor"
    val = metric_by_step(log_dir, "val/l1")
    assert sorted(val) == [3, 7] and all(0 < v < 1 for v in val.values())
    assert set(metric_by_step(log_dir, "val/psnr")) == set(val) and set(metric_by_step(log_dir, "val/ssim")) == set(val)
    pairs = [cli.datamodule.val_set[i] for i in range(len(cli.datamodule.val_set))]
    copy_error = torch.stack([(p["source"] - p["driving"]).abs().mean() for p in pairs]).mean().item()
    floor, under = metric_by_step(log_dir, "val/floor_l1"), metric_by_step(log_dir, "val/under_floor")
    assert floor[3] == pytest.approx(copy_error, rel=1e-4) and floor[7] == pytest.approx(copy_error, rel=1e-4)
    assert under[7] == pytest.approx(1 - val[7] / floor[7], rel=1e-4)
    rows = read_metrics(log_dir)
    for key in ("train/reconstruction", "train/identity", "train/tv", "train/motion", "train/grad_norm", "train/lr", "memory/rss_mb"):
        assert any(key in row for row in rows), key
    grid = sorted((log_dir / "samples").glob("step_*.png"))
    assert [g.name for g in grid] == ["step_0000004.png", "step_0000008.png"]
    assert (log_dir / "memory_report.json").is_file()
    checkpoints = {p.name for p in (log_dir / "checkpoints").glob("*.ckpt")}
    assert "last.ckpt" in checkpoints and any(name.startswith("best-") for name in checkpoints)
    ckpt = log_dir / "checkpoints" / "last.ckpt"
    validated = run_cli(tiny_args(tmp_path, subcommand="validate", extra=[f"--ckpt_path={ckpt}"]))
    assert validated.trainer.callback_metrics["val/l1"].item() == pytest.approx(val[7], rel=1e-4)  # same weights, same pairs
    run_cli(tiny_args(tmp_path, subcommand="predict", extra=[f"--ckpt_path={ckpt}", "--trainer.limit_predict_batches=1"]))
    restored = AnimatorModule.load_from_checkpoint(ckpt)
    frames = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(restored.eval()(frames, frames), cli.model.eval()(frames, frames), atol=1e-6)


def test_sample_grid_has_a_row_per_pair_and_a_target_column_for_cross_pairs(tmp_path):
    from PIL import Image

    cli = run_cli(tiny_args(tmp_path, steps=2, extra=["--data.init_args.val_mode=cross", "--trainer.val_check_interval=2"]))
    grid = Image.open(next((Path(cli.trainer.log_dir) / "samples").glob("step_*.png")))
    columns, rows = 4, 4  # source | driving | prediction | target; batch of 4 validation pairs
    assert grid.size == (columns * 66 + 2, rows * 66 + 2)


def test_mixed_precision_trains_with_finite_losses(tmp_path):
    cli = run_cli(tiny_args(tmp_path, steps=2, extra=["--trainer.precision=bf16-mixed", "--model.losses.motion=0.05"]))
    losses = metric_by_step(Path(cli.trainer.log_dir), "train/loss")
    assert len(losses) == 2 and all(0 < v < 10 for v in losses.values())


def test_dino_config_trains_with_random_init_and_test_reports_cross_identity_metrics(tmp_path):
    args = tiny_args(tmp_path, config="dino.yaml", steps=2, extra=["--model.descriptor.init_args.pretrained=false", "--model.descriptor.init_args.input_size=56"])
    cli = run_cli(args)
    assert not cli.model.descriptor.trainable
    ckpt = Path(cli.trainer.log_dir) / "checkpoints" / "last.ckpt"
    test = run_cli(tiny_args(tmp_path, config="dino.yaml", subcommand="test", extra=[
        "--model.descriptor.init_args.pretrained=false", "--model.descriptor.init_args.input_size=56", f"--ckpt_path={ckpt}"]))
    assert {"test/l1", "test/psnr", "test/ssim"} <= set(test.trainer.callback_metrics)


def test_dino_config_takes_a_local_weights_file(tmp_path):
    import timm

    weights = tmp_path / "dinov2_vits14.pth"
    torch.save(timm.create_model("vit_small_patch14_dinov2.lvd142m", pretrained=False, num_classes=0).state_dict(), weights)
    cli = run_cli(tiny_args(tmp_path, config="dino.yaml", steps=1, extra=[
        f"--model.descriptor.init_args.weights_path={weights}", "--model.descriptor.init_args.input_size=56"]))
    saved = torch.load(weights, weights_only=True)
    assert torch.equal(cli.model.descriptor.vit.state_dict()["blocks.0.mlp.fc1.weight"], saved["blocks.0.mlp.fc1.weight"])


def test_dino_without_weights_offline_stops_with_both_ways(tmp_path):
    result = run_cli_process(["fit", f"--config={CONFIGS / 'dino.yaml'}"], cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert "weights_path" in result.stderr and "online" in result.stderr and "pretrained=false" in result.stderr


def test_bad_keys_and_types_fail_with_jsonargparse_messages(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(tiny_args(tmp_path, extra=["--model.descriptor.init_args.num_keypoints=many"]))
    assert exc.value.code != 0
    assert "num_keypoints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(tiny_args(tmp_path, extra=["--model.no_such_key=1"]))
    assert "no_such_key" in capsys.readouterr().err


def test_print_config_shows_the_resolved_config(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_cli(["fit", f"--config={CONFIGS / 'keypoints.yaml'}", "--print_config"])
    assert exc.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["data"]["class_path"] == "datamodules.PuppetDataModule"
    assert printed["model"]["backbone"]["class_path"] == "modules.backbones.WarpingGenerator"  # the main job's
    assert printed["data"]["init_args"]["image_size"] == 64 and printed["trainer"]["max_steps"] == 1500
    assert printed["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"


def test_wandb_logger_works_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny_args(tmp_path, steps=2) if not a.startswith("--trainer.logger")]
    cli = run_cli(args + ["--trainer.logger=WandbLogger", f"--trainer.logger.save_dir={tmp_path}", "--trainer.logger.offline=true", "--trainer.logger.project=animator-test"])
    cli.trainer.logger.experiment.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("files/media/images/val/samples_*.png")), "sample grid not logged to W&B"
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())
    folder = Path(cli.trainer.checkpoint_callback.dirpath).parent  # <save_dir>/<project>/<run id>: one folder per run
    assert folder.parent == tmp_path / "animator-test" and (folder / "checkpoints" / "last.ckpt").is_file()
    assert (folder / "config.yaml").is_file() and (folder / "memory_report.json").is_file() and list((folder / "samples").glob("step_*.png"))
    assert not (tmp_path / "config.yaml").exists() and not (tmp_path / "samples").exists()


def test_cli_script_runs_from_the_repo(tmp_path):
    result = run_cli_process(["fit", "--help"], cwd=ROOT)
    assert result.returncode == 0 and "--model.descriptor" in result.stdout


def test_library_chatter_is_left_out_unless_verbose(tmp_path):
    base = tiny_args(tmp_path, steps=1, extra=["--data.init_args.test_clip_frames=2"])
    quiet = run_cli_process(base, cwd=tmp_path)
    loud = run_cli_process([*base, "--verbose=true"], cwd=tmp_path)
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr[-2000:] + loud.stderr[-2000:]
    for text in ("💡 Tip", "GPU available: False", "Seed set to 0", "is deprecated"):
        assert text not in quiet.stdout + quiet.stderr and text in loud.stdout + loud.stderr, text
    assert "final animation" in quiet.stdout + quiet.stderr  # the project's own lines stay
