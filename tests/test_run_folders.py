"""Run folders: one per config and data, a ``latest`` link, a video at the end of fit, validate/test/predict of
a checkpoint writing into that checkpoint's run folder (predict: videos and grids of the data's clips), and the
catalogue of what those runs left."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import torch
import yaml

from conftest import CONFIGS, TINY, read_metrics, run_cli
from lightning_app.catalogue import main as catalogue


def logger_config(tmp_path: Path) -> Path:
    """A config file that sets the logger (as configs do), so the command line does not."""
    config = tmp_path / "logger.yaml"
    config.write_text(yaml.safe_dump({"trainer": {"logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                                                             "init_args": {"save_dir": str(tmp_path / "logs"), "name": "kp"}}}}))
    return config


def video_frames(path: Path) -> tuple[int, int, int]:
    capture = cv2.VideoCapture(str(path))
    count, width, height = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    capture.release()
    return count, width, height


def test_fit_names_its_folder_for_config_and_data_and_predict_writes_into_it(tmp_path):
    common = [f"--config={CONFIGS / 'keypoints.yaml'}", f"--config={logger_config(tmp_path)}", *TINY, "--data.init_args.test_clips=1"]
    fit = run_cli(["fit", *common, "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    run = Path(fit.trainer.log_dir)
    assert type(fit.model.backbone).__name__ == "WarpingGenerator" and fit.model.image_size == 64  # the main job's model
    assert run == tmp_path / "logs" / "kp" / "puppet" / "version_0"
    assert (run / "config.yaml").is_file() and (run.parent / "latest").resolve() == run.resolve()
    count, width, height = video_frames(run / "samples" / "final_self_held_out_clip0.mp4")
    assert (count, width, height) == (8, 4 * 64, 64)  # 8 frames of portrait | driving | output | target

    again = run_cli(["fit", *common, "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    assert Path(again.trainer.log_dir) == run.parent / "version_1" and (run.parent / "latest").resolve() == run.parent / "version_1"

    ckpt = run.parent / "latest" / "checkpoints" / "last.ckpt"
    latest = (run.parent / "version_1").resolve()
    predicted = run_cli(["predict", *common, f"--ckpt_path={ckpt}"])
    assert Path(predicted.trainer.log_dir).resolve() == latest / "predict"
    folder = latest / "predict" / "predictions"
    videos = sorted(p.name for p in folder.glob("*.mp4"))
    assert videos == ["cross_absolute_held_out_clip0.mp4", "cross_relative_held_out_clip0.mp4", "self_held_out_clip0.mp4"]
    assert all(video_frames(folder / v) == (8, 4 * 64, 64) for v in videos) and (folder / "self_held_out_clip0.png").is_file()
    assert (latest / "predict" / "config.yaml").is_file()
    (latest / "predict" / "config.yaml").unlink()
    run_cli(["predict", *common, "--ckpt_path=last"])  # the newest last.ckpt of this config and data, same folder
    assert (latest / "predict" / "config.yaml").is_file()
    training_metrics = (latest / "metrics.csv").read_text()
    for _ in range(2):  # a second test replaces the first one's files
        run_cli(["test", *common, f"--ckpt_path={ckpt}"])
    assert sorted(p.name for p in run.parent.iterdir()) == ["latest", "version_0", "version_1"]  # no new version
    assert (latest / "test" / "evaluation" / "evaluation.json").is_file() and (latest / "test" / "metrics.csv").is_file()
    assert (latest / "metrics.csv").read_text() == training_metrics and (latest / "config.yaml").is_file()

    torch.save({"module": torch.nn.Linear(2, 2)}, run.parent / "pickled.ckpt")  # e.g. an adapter checkpoint
    catalogue([str(tmp_path / "logs"), "--out", str(tmp_path / "catalogue.json")])
    entries = {Path(e["path"]).resolve(): e for e in json.loads((tmp_path / "catalogue.json").read_text())}
    last = entries[ckpt.resolve()]
    assert last["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest() and last["step"] == 2
    assert last["model"]["backbone.class_path"] == "modules.backbones.WarpingGenerator" and last["data"]["image_size"] == 64
    validated = [float(row["val/l1"]) for row in read_metrics(latest) if "val/l1" in row]
    assert last["metrics"]["val/l1"] == validated[-1]
    assert last["evaluation"]["test/evaluation"]["pairs"]["l1"] > 0  # test without protocols: its random pairs
    assert entries[(run.parent / "pickled.ckpt").resolve()]["note"].startswith("not read")
    assert len(entries) == len({p.resolve() for p in (tmp_path / "logs").rglob("*.ckpt")})  # latest/ counted once
