"""Rendering Live2D clip datasets and training from them (skipped where the shared models are absent)."""

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import CONFIGS, metric_by_step, run_cli, tiny_args
from core.vocabulary import PARAMETER_INDEX, default_parameters
from datamodules import Live2DClipDataModule
from datamodules.live2d.clips import ClipError, index_clips, read_clip
from datamodules.live2d.trajectories import random_trajectory
from lightning_app.render import main as render_main, render_dataset
from test_live2d import MODELS, needs_models

CHARACTERS = ["Haru", "Mark", "Hiyori"]


def test_trajectories_start_neutral_and_close_the_eyes_often_and_fully():
    trajectories = np.stack([random_trajectory(seed, 60) for seed in range(100)])
    assert np.allclose(trajectories[:, 0], default_parameters())
    eyes = trajectories[..., PARAMETER_INDEX["ParamEyeLOpen"]]
    assert 0.12 < (eyes < 0.5).mean() < 0.35, "closed eyes common enough to learn, open ones still the rule"
    assert (eyes.min(axis=1) == 0.0).mean() > 0.5, "most clips close the eyes fully at least once"
    assert np.array_equal(eyes, trajectories[..., PARAMETER_INDEX["ParamEyeROpen"]])


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    if not (MODELS / "Hiyori").is_dir():
        pytest.skip(f"Live2D sample models not found under {MODELS}")
    out = tmp_path_factory.mktemp("live2d")
    assert render_dataset(MODELS, out, size=64, clips=1, replays=1, frames=10, workers=2, characters=CHARACTERS) == 6
    return out


@needs_models
def test_clips_are_complete_and_replays_share_their_trajectory(dataset):
    clips, bad = index_clips(dataset)
    assert bad == [] and len(clips) == 6 and (dataset / "index.json").is_file()
    replays = [c for c in clips if c.source == "replay"]
    params = [np.load(Path(c.path) / "params.npy") for c in replays]
    assert all(np.array_equal(params[0], p) for p in params[1:]), "a replayed trajectory is the same on every character"
    randoms = [np.load(Path(c.path) / "params.npy") for c in clips if c.source == "random"]
    assert not np.array_equal(randoms[0], randoms[1])
    frames = np.load(Path(replays[0].path) / "frames.npy", mmap_mode="r")
    assert frames.shape == (10, 64, 64, 4) and frames[..., 3].max() == 255
    assert not np.array_equal(frames[0], frames[-1]), "the trajectory moves the character"
    regions = np.load(Path(replays[0].path) / "regions.npy", mmap_mode="r")
    keypoints = np.load(Path(replays[0].path) / "keypoints.npy", mmap_mode="r")
    assert regions.shape == (10, 64, 64) and keypoints.shape == (10, 12, 2) and replays[0].ground_truth == ("regions", "keypoints")
    assert ((keypoints >= 0) & (keypoints < 64)).all()


@needs_models
def test_rendering_resumes_and_names_missing_characters(dataset, capsys):
    assert render_dataset(MODELS, dataset, size=64, clips=1, replays=1, frames=10, workers=1, characters=CHARACTERS) == 0
    with pytest.raises(SystemExit) as exc:
        render_main(["--models", str(MODELS), "--out", str(dataset), "--characters", "Nobody"])
    assert exc.value.code == 2 and "Nobody" in capsys.readouterr().err


@needs_models
def test_datamodule_splits_by_character_and_gives_cross_identity_ground_truth(dataset):
    dm = Live2DClipDataModule(str(dataset), image_size=32, batch_size=4, num_workers=2, held_out=["Mark"], test_mode="cross")
    train = next(iter(dm.train_dataloader()))
    mark = sorted(CHARACTERS).index("Mark")
    assert train["source"].shape == (4, 3, 32, 32) and (train["identity"] != mark).all()
    assert (train["identity"] == train["driving_identity"]).all()
    assert train["driving_regions"].shape == (4, 32, 32) and train["driving_keypoints"].shape == (4, 12, 2)
    assert train["driving_keypoints"].max() < 32, "keypoints are scaled with the image"
    test = next(iter(dm.test_dataloader()))
    assert (test["identity"] == mark).all() and (test["driving_identity"] != mark).all()
    assert not np.allclose(test["target"], test["driving"]), "target is Mark in the driver's pose, not the driver"
    assert np.allclose(test["source_params"].numpy(), test["source_params"][0].numpy())  # the neutral first frame
    with pytest.raises(Exception, match="held_out names characters not in"):
        Live2DClipDataModule(str(dataset), held_out=["Nobody"])


@needs_models
def test_cross_identity_training_pairs_stay_among_training_characters(dataset):
    dm = Live2DClipDataModule(str(dataset), image_size=32, batch_size=4, num_workers=0, held_out=["Mark"], train_pairs=40, cross_fraction=0.5)
    pairs = dm.train_dataloader().dataset
    items = [pairs[i] for i in range(len(pairs))]
    assert len(items) == 40
    mark = sorted(CHARACTERS).index("Mark")
    cross = [item for item in items if item["identity"] != item["driving_identity"]]
    assert len(cross) == 20, "half the training pairs are cross-identity"
    assert all(mark not in (item["identity"], item["driving_identity"]) for item in items), "no held-out character drives or is driven"
    assert all(not np.allclose(item["target"], item["driving"]) for item in cross), "the target is the portrait's character, not the driver"
    assert len({item["source_params"].numpy().tobytes() for item in cross}) > 1, "portraits come from any frame of the replay"
    assert all(torch.equal(item["driving_first"], item["source"]) for item in items if item["identity"] == item["driving_identity"])
    frames, names = dm.train_cross.frames, sorted(CHARACTERS)
    replay = {c.character: i for i, c in enumerate(dm.train_cross.clips) if c.source == "replay"}
    for item in cross:  # relative transfer's reference: the driver in the portrait's pose (same replayed frame)
        portrait, driver = replay[names[item["identity"]]], replay[names[item["driving_identity"]]]
        t = next(t for t in range(10) if torch.equal(frames.frame(portrait, t)["params"], item["source_params"]))
        assert torch.equal(item["driving_first"], frames.frame(driver, t)["image"])
        # the target's region map is the portrait's character's at the driver's frame, not the driver's
        t = next(t for t in range(frames.clips[portrait].frames) if torch.equal(frames.frame(portrait, t)["image"], item["target"]))
        assert torch.equal(item["target_regions"], frames.frame(portrait, t)["regions"])
        assert not torch.equal(item["target_regions"], item["driving_regions"])
    assert all(torch.equal(item["target_regions"], item["driving_regions"]) for item in items if item["identity"] == item["driving_identity"])
    assert "driving_first" not in Live2DClipDataModule(str(dataset), image_size=32, held_out=["Mark"], train_pairs=4).train_set[0]
    with pytest.raises(Exception, match="cross_fraction must be in"):
        Live2DClipDataModule(str(dataset), held_out=["Mark"], cross_fraction=1.0)
    with pytest.raises(Exception, match=r"among Haru\)"):
        Live2DClipDataModule(str(dataset), held_out=["Mark", "Hiyori"], cross_fraction=0.5)


@needs_models
def test_trains_from_live2d_clips(dataset, tmp_path):
    args = tiny_args(tmp_path, steps=3, extra=[
        f"--config={CONFIGS / 'data' / 'live2d.yaml'}", f"--data.init_args.root={dataset}", "--data.init_args.image_size=64",
        "--data.init_args.held_out=[Mark]", "--data.init_args.num_workers=0", "--data.init_args.batch_size=2",
        "--data.init_args.val_pairs=4", "--trainer.val_check_interval=3"])
    cli = run_cli(args)
    assert cli.model.image_size == 64
    assert len(metric_by_step(Path(cli.trainer.log_dir), "train/loss")) == 3
    assert metric_by_step(Path(cli.trainer.log_dir), "val/l1")


@needs_models
def test_registration_trains_on_relative_cross_identity_pairs_from_the_cli(dataset, tmp_path):
    """The benchmark's best run: registration keypoints, cross-identity pairs transferred relatively in training."""
    args = tiny_args(tmp_path, steps=2, extra=[
        f"--config={CONFIGS / 'backbone' / 'warping.yaml'}", f"--config={CONFIGS / 'registration.yaml'}",
        f"--config={CONFIGS / 'data' / 'live2d.yaml'}", f"--data.init_args.root={dataset}", "--data.init_args.image_size=64",
        "--data.init_args.held_out=[Mark]", "--data.init_args.num_workers=0", "--data.init_args.batch_size=4",
        "--data.init_args.cross_fraction=0.5", "--data.init_args.val_pairs=4"])
    cli = run_cli(args)
    assert cli.model.registration_transfer == "euclidean" and cli.datamodule.train_cross is not None
    assert "driving_first" in next(iter(cli.datamodule.train_dataloader()))
    losses = metric_by_step(Path(cli.trainer.log_dir), "train/loss")
    assert len(losses) == 2 and all(np.isfinite(list(losses.values())))


@needs_models
def test_damaged_clips_are_named_and_skipped(dataset, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    frames = copy / "Haru" / "random_000" / "frames.npy"
    frames.write_bytes(frames.read_bytes()[:1000])
    with pytest.raises(ClipError, match="frames.npy.*truncated"):
        read_clip(frames.parent)
    keypoints = copy / "Mark" / "random_000" / "keypoints.npy"
    np.save(keypoints, np.zeros((10, 5, 2), np.float32))
    with pytest.raises(ClipError, match=r"keypoints.npy: expected float32 \(10, 12, 2\)"):
        read_clip(keypoints.parent)
    params = copy / "Hiyori" / "random_000" / "params.npy"
    np.save(params, np.zeros((3, 11), np.float32))
    clips, bad = index_clips(copy)
    assert len(clips) == 3 and len(bad) == 3
    assert any("Hiyori/random_000/params.npy" in line and "one entry per frame" in line for line in bad)
    with pytest.warns(UserWarning, match="skipping 3 bad clip"):
        Live2DClipDataModule(str(copy), held_out=["Mark"], val_mode="self", test_mode="self")


@needs_models
@pytest.mark.parametrize("name, count, motion", [("Haru", 6, "TapBody:0"), ("Z16", 1, "idle:0")])  # Cubism 3 and Cubism 2 (.mtn)
def test_authored_motions_become_clips_with_their_parameters(tmp_path, name, count, motion):
    assert render_dataset(MODELS, tmp_path, size=48, clips=0, replays=0, frames=40, workers=1, characters=[name], motions=True) == count
    clips, bad = index_clips(tmp_path)
    assert bad == [] and {c.source for c in clips} == {"motion"} and len(clips) == count
    clip = next(c for c in clips if c.motion == motion)
    params = np.load(Path(clip.path) / "params.npy")
    assert 1 < clip.frames <= 40 and params.shape == (clip.frames, 11)
    assert params.std(axis=0).max() > 0.05, "the authored motion moves standard parameters"
    frames = np.load(Path(clip.path) / "frames.npy", mmap_mode="r")
    assert not np.array_equal(frames[0], frames[-1])


@needs_models
def test_rendering_is_quiet_unless_verbose(tmp_path, capfd):
    """The workers' native banners and per-model log lines (live2d-py, the Cubism core) go to /dev/null by default."""
    for verbose in (False, True):
        render_dataset(MODELS, tmp_path / str(verbose), size=32, clips=1, replays=0, frames=2, workers=1, characters=["Hiyori"], verbose=verbose)
        out, err = capfd.readouterr()
        native = [line for line in (out + err).splitlines() if "[pyi]" in line or "Cubism SDK Core" in line]
        assert bool(native) == verbose, native[:3]
