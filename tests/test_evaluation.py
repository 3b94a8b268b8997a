"""Evaluation protocols, the evaluator networks and the evaluation report on puppet data."""

import json
from pathlib import Path

import cv2
import pytest
import torch

from conftest import CONFIGS, run_cli, tiny_args
from datamodules import PuppetDataModule
from lightning_app.train_evaluator import main as train_evaluator
from modules.descriptors import Motion
from modules.descriptors.base import movement_scale
from modules.evaluator import EvaluatorModule, supervised_contrastive_loss


@pytest.fixture(scope="module")
def evaluator(tmp_path_factory) -> Path:
    """A tiny evaluator trained for a minute on 8 puppet characters."""
    root = tmp_path_factory.mktemp("evaluator")
    train_evaluator([
        f"--config={CONFIGS / 'eval' / 'evaluator.yaml'}", "--model.encoder=resnet10t", "--model.input_size=64",
        "--data.init_args.image_size=64", "--data.init_args.num_workers=0", "--data.init_args.train_identities=8",
        "--data.init_args.held_out_identities=4", "--data.init_args.batch_size=16", "--data.init_args.val_pairs=16",
        "--trainer.max_steps=150", "--trainer.val_check_interval=150", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.logger.init_args.save_dir={root}",
        "--model.optimizer.init_args.lr=0.003",
    ])
    return next(root.glob("evaluator/puppet/version_0/checkpoints/last.ckpt"))  # logs/<config>/<data>/version_N


def protocols(**kwargs) -> PuppetDataModule:
    return PuppetDataModule(image_size=64, batch_size=4, num_workers=0, test_protocols=["self", "cross"], test_clips=2, test_clip_frames=5, **kwargs)


def test_protocol_items_pair_the_right_frames():
    dm = protocols()
    assert dm.test_names == ["self/train", "self/held_out", "cross/train", "cross/held_out"]
    loaders = dm.test_dataloader()
    self_items = loaders[1].dataset
    first, later = self_items[0], self_items[3]
    assert len(self_items) == 2 * 5 and later["frame"] == 3 and later["sequence"] == 0
    assert torch.equal(first["source"], later["source"]) and torch.equal(later["target"], later["driving"])
    assert torch.equal(first["driving"], first["source"]), "frame 0 drives itself"
    cross = loaders[3].dataset[4]
    assert cross["identity"] != cross["driving_identity"]
    assert cross["identity"] >= 1_000_000, "held-out portraits"
    assert not torch.equal(cross["target"], cross["driving"]), "the target is the portrait's character in the driver's pose"
    assert torch.equal(cross["driving_first"], loaders[3].dataset[0]["driving"])
    assert cross["target_keypoints"].shape == (12, 2)


def test_relative_motion_moves_the_source_by_the_drivers_change():
    source = Motion(torch.zeros(1, 2), keypoints=torch.tensor([[[0.1, 0.2]]]), jacobians=torch.eye(2)[None, None] * 2)
    first = Motion(torch.ones(1, 2), keypoints=torch.tensor([[[0.5, 0.5]]]), jacobians=torch.eye(2)[None, None])
    now = Motion(torch.full((1, 2), 3.0), keypoints=torch.tensor([[[0.6, 0.4]]]), jacobians=torch.eye(2)[None, None] * 3)
    moved = source.relative(now, first)
    assert torch.allclose(moved.vector, torch.full((1, 2), 2.0)) and torch.allclose(moved.keypoints, torch.tensor([[[0.2, 0.1]]]))
    assert torch.allclose(moved.jacobians, torch.eye(2) * 6)


def test_movement_scale_matches_the_drivers_face_to_the_portraits():
    face = torch.tensor([[[-0.2, -0.2], [0.2, -0.2], [0.0, 0.3], [-0.1, 0.1]]])
    portrait, driver_first = Motion(face.flatten(1), keypoints=face), Motion((face / 2).flatten(1), keypoints=face / 2)
    scale = movement_scale(portrait, driver_first)
    assert torch.allclose(scale, torch.tensor([2.0]))  # the portrait's face is twice the driver's
    step = torch.tensor([0.05, 0.0])
    driver_now = Motion((face / 2 + step).flatten(1), keypoints=face / 2 + step)
    moved = portrait.relative(driver_now, driver_first, scale)
    assert torch.allclose(moved.keypoints, face + 2 * step) and torch.allclose(moved.vector, (face + 2 * step).flatten(1))
    assert movement_scale(Motion(torch.zeros(1, 3)), driver_first) is None, "no keypoints, no scale"


def test_contrastive_loss_prefers_grouped_embeddings():
    labels = torch.tensor([0, 0, 1, 1])
    grouped = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]]), dim=1)
    mixed = grouped[[0, 2, 1, 3]]
    assert supervised_contrastive_loss(grouped, labels, 0.1) < supervised_contrastive_loss(mixed, labels, 0.1)


def test_evaluator_metrics_behave(evaluator):
    model = EvaluatorModule.load_from_checkpoint(evaluator).eval()
    loaders = protocols().test_dataloader()
    items = [loaders[split].dataset[index] for split in (2, 3) for index in (2, 7)]  # four characters, frame 2 of each
    target, source = torch.stack([i["target"] for i in items]), torch.stack([i["source"] for i in items])
    assert len({int(i["identity"]) for i in items}) == 4
    with torch.no_grad():
        real, same = model(target), model(target.clone())
        shifted = model(torch.roll(target, shifts=6, dims=-1))
        portrait = model(source)
    assert torch.equal(real["keypoints"], same["keypoints"]), "identical images → zero AKD"
    akd_shift = (shifted["keypoints"] - real["keypoints"]).norm(dim=-1).mean()
    assert akd_shift > 2.0, f"a 6 px shift should move the keypoints, AKD {akd_shift:.2f}"
    assert (shifted["keypoints"][..., 0] - real["keypoints"][..., 0]).mean() > 2.0, "... to the right"
    aed_same = 1 - (real["identity"] * portrait["identity"]).sum(1)
    aed_swapped = 1 - (torch.roll(real["identity"], 1, 0) * portrait["identity"]).sum(1)
    assert aed_swapped.mean() > aed_same.mean(), "another character's frame is further from the portrait's identity"


def test_test_command_reports_every_protocol_with_evaluator_metrics_and_samples(tmp_path, evaluator):
    args = tiny_args(tmp_path, subcommand="test", extra=[
        "--data.init_args.test_protocols=[self, cross]", "--data.init_args.test_clips=2", "--data.init_args.test_clip_frames=5",
        "--trainer.logger=TensorBoardLogger", f"--trainer.logger.save_dir={tmp_path / 'logs'}",
        f"--trainer.callbacks.evaluator={evaluator}",
    ])
    cli = run_cli(args)
    folder = Path(cli.trainer.log_dir) / "evaluation"
    report = json.loads((folder / "evaluation.json").read_text())["results"]
    groups = {"self/train", "self/held_out", "cross_absolute/train", "cross_absolute/held_out", "cross_relative/train", "cross_relative/held_out"}
    assert set(report) == groups
    for row in report.values():
        assert {"l1", "psnr", "ssim", "akd", "akd_floor", "ape", "ape_floor", "aed", "aed_floor", "jitter"} <= set(row)
    assert (folder / "evaluation.csv").read_text().splitlines()[0].startswith("group,l1,psnr,ssim")
    video = cv2.VideoCapture(str(folder / "cross_relative_held_out_clip0.mp4"))
    assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == 5 and int(video.get(cv2.CAP_PROP_FRAME_WIDTH)) == 4 * 64
