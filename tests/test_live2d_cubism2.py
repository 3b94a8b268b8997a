"""Cubism 2 models through the one renderer: their files checked in Python, ground truth where the v2 API gives
it, and one bad model not stopping the others (damaged copies are made in temporary folders, never committed)."""

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import ROOT, write_puppet_clips

from datamodules import Live2DClipDataModule

from core.errors import UserFacingError
from core.frames import composite
from core.vocabulary import REGIONS, default_parameters
from datamodules.live2d.clips import index_clips
from datamodules.live2d.model_files import Live2DModelError, find_setting_files, read_model_files
from datamodules.live2d.regions import split_sides
from datamodules.live2d.render_process import render_in_subprocess
from datamodules.live2d_datamodule import DEFAULT_HELD_OUT
from lightning_app.render import MAX_ATTEMPTS, render_dataset

SHARED = Path(os.environ.get("ANIME_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
MODELS = SHARED / "live2d"
needs_models = pytest.mark.skipif(not (MODELS / "Z16").is_dir(), reason=f"Cubism 2 sample models not found under {MODELS} (set ANIME_SHARED_DIR)")


def copy_model(name: str, into: Path) -> Path:
    """A copy of model folder ``name`` under ``into``; returns its setting file."""
    shutil.copytree(MODELS / name, into / name)
    return find_setting_files(into)[name]


@needs_models
def test_all_seventeen_characters_are_found_in_both_generations():
    found = find_setting_files(MODELS)
    generations = {name: read_model_files(path).generation for name, path in found.items()}
    assert len(found) == 17
    assert sorted(n for n, g in generations.items() if g == 3) == ["Haru", "Hiyori", "Mao", "Mark", "Rice", "Wanko"]


@needs_models
def test_bad_cubism2_files_are_named_before_the_core_sees_them(tmp_path):
    setting_file = copy_model("Z16", tmp_path)
    setting = json.loads(setting_file.read_text())
    moc = setting_file.parent / setting["model"]
    data = moc.read_bytes()
    moc.write_bytes(data[:10])
    with pytest.raises(Live2DModelError, match=r"z16\.moc.*not a \.moc \(Cubism 2\) file"):
        read_model_files(setting_file)
    moc.unlink()
    with pytest.raises(Live2DModelError, match=r"z16\.model\.json.*model = 'moc/z16\.moc' does not exist"):
        read_model_files(setting_file)
    moc.write_bytes(data)
    texture = setting_file.parent / setting["textures"][0]
    texture.rename(texture.with_suffix(".moved"))
    with pytest.raises(Live2DModelError, match=r"textures\[0\].*does not exist"):
        read_model_files(setting_file)
    texture.with_suffix(".moved").rename(texture)
    neither = setting_file.parent / "z16.json"
    neither.write_text(setting_file.read_text())
    with pytest.raises(Live2DModelError, match="neither a Cubism 3/4 .* nor a Cubism 2"):
        read_model_files(neither)
    (setting_file.parent / "bare.model.json").write_text(json.dumps({"textures": []}))
    with pytest.raises(Live2DModelError, match=r"lacks \"model\""):
        read_model_files(setting_file.parent / "bare.model.json")


@needs_models
def test_a_damaged_motion_leaves_the_trajectories_usable(tmp_path):
    setting_file = copy_model("Koharu", tmp_path)  # its unnamed group "" holds nine motions
    files = read_model_files(setting_file)
    assert not files.motion_problems and {":0", ":1", ":2"} <= set(files.motions)
    path = files.motions[":0"]
    path.write_text("# Live2D Animator Motion Data\nPARAM_ANGLE_X=0,1,oops\n")
    files = read_model_files(setting_file)
    assert ":0" not in files.motions and "line 2: not a motion curve" in files.motion_problems[":0"]
    with pytest.raises(Live2DModelError, match=f"authored motions cannot be loaded: .*{path.name}"):
        files.check_motions_loadable()
    path.unlink()  # a missing motion is skipped by the native loader too: the later ones move up one place
    files = read_model_files(setting_file)
    files.check_motions_loadable()
    assert files.native_motion(":1") == ("", 0) and files.native_motion(":2") == ("", 1)
    assert files.native_motion("idle:0") == ("idle", 0), "other groups keep their indices"


def test_eyes_and_brows_are_split_at_the_midline_between_the_eyes():
    labels = np.full((8, 8), REGIONS.index("left_eye"), np.uint8)
    labels[:, :2] = REGIONS.index("left_brow")
    split_sides(labels, left_eye=np.array([6.0, 4.0]), right_eye=np.array([2.0, 4.0]))
    assert (labels[:, :2] == REGIONS.index("right_brow")).all()
    assert (labels[:, 2:4] == REGIONS.index("right_eye")).all() and (labels[:, 4:] == REGIONS.index("left_eye")).all()


@needs_models
def test_a_face_without_a_labelled_mouth_renders_without_ground_truth():
    nipsilon = render_in_subprocess(find_setting_files(MODELS)["Nipsilon"], default_parameters()[None], size=64)
    assert nipsilon.frames.shape == (1, 64, 64, 4) and nipsilon.frames[0, ..., 3].mean() > 20
    assert nipsilon.regions is None and nipsilon.keypoints is None
    assert "no drawables for mouth" in nipsilon.ground_truth_problem


@needs_models
def test_one_bad_model_does_not_stop_the_others_and_reruns_give_up_after_retrying(tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    copy_model("Z16", models)
    broken = copy_model("Z16", models / "tmp")
    shutil.move(str(broken.parent), str(models / "Broken"))
    (models / "Broken" / read_model_files(models / "Broken" / broken.name).setting["textures"][0]).unlink()
    out = tmp_path / "clips"
    rendered = render_dataset(models, out, size=32, clips=1, replays=0, frames=2, workers=1)
    index = json.loads((out / "index.json").read_text())
    assert rendered == 1 and index["clips"] == ["Z16/random_000"]
    assert "textures[0]" in index["failed"]["Broken"]["error"] and index["failed"]["Broken"]["attempts"] == 1
    assert "error: Broken not rendered" in capsys.readouterr().err
    render_dataset(models, out, size=32, clips=1, replays=0, frames=2, workers=1)
    assert json.loads((out / "index.json").read_text())["failed"]["Broken"]["attempts"] == MAX_ATTEMPTS
    capsys.readouterr()
    render_dataset(models, out, size=32, clips=1, replays=0, frames=2, workers=1)
    assert "Broken left out" in capsys.readouterr().err
    clips, bad = index_clips(out)
    assert [c.character for c in clips] == ["Z16"] and not bad
    portrait = cv2.cvtColor(cv2.imread(str(out / "Z16" / "portrait.png")), cv2.COLOR_BGR2RGB)
    first = np.load(out / "Z16" / "random_000" / "frames.npy")[0]
    assert np.array_equal(portrait, composite(first, (255, 255, 255))), "the portrait is the clip's neutral first frame over white"
    assert not (out / "Broken" / "portrait.png").exists()


@needs_models
def test_a_model_that_kills_its_worker_is_reported_and_the_others_render(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    copy_model("Z16", models)
    crashing = copy_model("Z16", models / "tmp")
    shutil.move(str(crashing.parent), str(models / "Crash"))
    moc = models / "Crash" / read_model_files(models / "Crash" / crashing.name).setting["model"]
    moc.write_bytes(moc.read_bytes()[: len(moc.read_bytes()) // 3])  # passes the header check; the core gets a truncated moc
    out = tmp_path / "clips"
    render_dataset(models, out, size=32, clips=2, replays=0, frames=2, workers=2)
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["clips"]) == ["Z16/random_000", "Z16/random_001"]
    assert "Crash" in index["failed"], "the truncated model is reported, whichever way it failed"


def test_clips_without_ground_truth_are_left_out_or_drop_it_for_all(tmp_path):
    root = write_puppet_clips(tmp_path / "clips", {"A": 1, "B": 2, "C": 3}, without_ground_truth=("C",))
    with pytest.warns(UserWarning, match=r"leaving out 2 clip\(s\) without region maps and keypoints \(C\)"):
        skipped = Live2DClipDataModule(str(root), image_size=32, held_out=["B"])
    assert skipped.train_set.ground_truth and "source_regions" in skipped.train_set[0]
    assert {c.character for c in skipped.train_set.clips} == {"A", "B"}
    kept = Live2DClipDataModule(str(root), image_size=32, held_out=["B"], without_ground_truth="keep")
    assert not kept.train_set.ground_truth and "source_regions" not in kept.train_set[0]
    assert {c.character for c in kept.train_set.clips} == {"A", "B", "C"}


def test_the_default_split_is_the_configs_and_the_datamodules_default(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "data" / "live2d.yaml").read_text())
    assert tuple(config["data"]["init_args"]["held_out"]) == DEFAULT_HELD_OUT
    root = write_puppet_clips(tmp_path / "clips", {"Mark": 1, "Rice": 2, "Koharu": 3, "Tororo": 4})
    data = Live2DClipDataModule(str(root), image_size=32)
    assert data._split == {"train": {"Koharu"}, "held_out": {"Mark", "Rice", "Tororo"}}



def test_puppet_pairs_mixed_into_training_have_their_share_new_identities_and_the_clips_keys(tmp_path):
    root = write_puppet_clips(tmp_path / "clips", {"A": 1, "B": 2, "C": 3})
    plain = Live2DClipDataModule(str(root), image_size=32, held_out=["B"], train_pairs=30, num_workers=0)
    assert plain.puppet_pairs is None and len(plain.train_dataloader().dataset) == 30
    mixed = Live2DClipDataModule(str(root), image_size=32, held_out=["B"], train_pairs=30, num_workers=0, puppet_fraction=0.25,
                                 puppet_identities=4)
    pairs = mixed.train_dataloader().dataset
    assert len(pairs) == 40, "30 clip pairs are three quarters"
    clip_item, puppet_item = pairs[0], pairs[35]
    assert clip_item.keys() == puppet_item.keys()
    assert all(clip_item[k].shape == puppet_item[k].shape for k in clip_item)
    labels = {int(pairs[i]["identity"]) for i in range(30, 40)}
    assert labels <= {3, 4, 5, 6} and len(labels) > 1, "puppet identities come after the three characters' labels"
    assert {int(pairs[i]["identity"]) for i in range(30)} <= set(mixed.train_set.identity.values())
    assert len(mixed.val_dataloader().dataset) == len(plain.val_dataloader().dataset), "validation stays on the clips"
    kept = Live2DClipDataModule(str(write_puppet_clips(tmp_path / "bare", {"A": 1, "B": 2}, without_ground_truth=("A", "B"))), image_size=32,
                                held_out=["B"], train_pairs=8, num_workers=0, puppet_fraction=0.5)
    assert "source_regions" not in kept.train_dataloader().dataset[12], "puppets drop the ground truth the clips lack"
    with pytest.raises(UserFacingError, match="puppet_fraction must be in"):
        Live2DClipDataModule(str(root), image_size=32, held_out=["B"], puppet_fraction=1.0)
