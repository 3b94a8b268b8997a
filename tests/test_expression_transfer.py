"""benchmarks/expression_transfer.py: patches centred on the landmarks, a synthesiser that starts as the copy and
learns a blink from the openings, seen and held-out characters scored apart, one-line errors before writing."""

import json
import sys

import pytest
import torch

from conftest import ROOT, write_puppet_clips
from core.vocabulary import PARAMETER_INDEX, default_parameters
from datamodules.puppet import PuppetIdentity, render_puppet

sys.path.insert(0, str(ROOT / "benchmarks"))
import expression_transfer as et  # noqa: E402


def test_patches_are_centred_on_the_landmark_and_mirrored():
    images = torch.zeros(2, 3, 32, 32)
    images[:, :, 10, 20] = 1.0  # row 10, column 20: the keypoint (20.5, 10.5) in the corner-origin convention
    images[:, 0, 10, 21] = 0.5  # one pixel to its right, red only
    patches = et.crop_patches(images, torch.tensor([[20.5, 10.5], [20.5, 10.5]]), 5, torch.tensor([False, True]))
    assert patches.shape == (2, 3, 5, 5)
    assert torch.allclose(patches[:, :, 2, 2], torch.ones(2, 3), atol=1e-5), "the landmark's pixel is the centre"
    assert patches[0, 0, 2, 3] == pytest.approx(0.5, abs=1e-5) and patches[1, 0, 2, 1] == pytest.approx(0.5, abs=1e-5), "mirrored left to right"
    assert patches[0].sum() == pytest.approx(3.5, abs=1e-4), "sampled one to one: nothing smeared"


def _blink_items(side: int = 13) -> et.PartItems:
    """Puppet eyes: each identity's open eye as the source, the same eye at openings 0, 0.5 and 1 as targets."""
    sources, targets, openings = [], [], []
    for seed in (3, 4, 5, 6):
        identity = PuppetIdentity.from_seed(seed)
        frames = {}
        for value in (1.0, 0.5, 0.0):
            params = default_parameters()
            params[PARAMETER_INDEX["ParamEyeLOpen"]] = params[PARAMETER_INDEX["ParamEyeROpen"]] = value
            frames[value] = render_puppet(identity, params, 64)
        for value, frame in frames.items():
            for index, mirrored in ((0, False), (1, True)):
                def patch(f):
                    image = torch.from_numpy(f.image).permute(2, 0, 1).float()[None] / 255.0
                    return et.crop_patches(image, torch.from_numpy(f.keypoints[index : index + 1]).float(), side, torch.tensor([mirrored]))[0]
                sources.append(patch(frames[1.0]))
                targets.append(patch(frame))
                openings.append(torch.tensor([1.0, value]))
    return et.PartItems(torch.stack(sources), torch.stack(targets), torch.stack(openings), ["p"] * len(sources))


def test_synthesiser_starts_as_the_copy_and_learns_a_blink_from_the_openings():
    torch.manual_seed(0)
    items = _blink_items()
    model = et.PatchSynthesiser(width=16)
    with torch.no_grad():
        assert torch.equal(model(items.source, items.openings), items.source), "untrained: the copy"
    closing = items.openings[:, 1] == 0.0
    copy_error = (items.source - items.target)[closing].abs().mean()
    assert copy_error > 0.02, "a closed puppet eye differs from an open one"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(200):
        loss = (model(items.source, items.openings) - items.target).abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        closed = model(items.source, items.openings)
        kept_open = model(items.source, torch.ones_like(items.openings))
    assert (closed - items.target)[closing].abs().mean() < 0.5 * copy_error, "it closes the eyes it is told to close"
    assert (kept_open - items.source)[closing].abs().mean() < 0.5 * (closed - items.source)[closing].abs().mean(), \
        "the openings decide: told the eye stays open, it changes the patch far less"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_puppet_clips(tmp_path_factory.mktemp("clips"), {"A": 11, "B": 12, "C": 13, "D": 14}, clips=3, replays=0, frames=5,
                              size=32, missing={"D": ("ParamMouthOpenY",)})


def test_benchmark_scores_training_characters_apart_from_held_out_ones(clips, tmp_path, capsys):
    out = tmp_path / "out"
    et.main(["--data", str(clips), "--held-out", "C", "D", "--budget", "1", "--size", "32", "--patch", "9", "--probe-clips", "1",
             "--out", str(out)])
    report = json.loads((out / "expression_transfer.json").read_text())
    eyes, mouth = report["parts"]["eyes"], report["parts"]["mouth"]
    assert eyes["steps"] > 0 and eyes["training_items"] == 2 * 2 * 2 * 4, "A and B, 2 clips each, 4 frames after the first, 2 eyes"
    seen = eyes["rows"]["training characters, held-back clips"]["all"]
    assert seen["items"] == 2 * 1 * 4 * 2 and seen["copy"] > 0
    assert eyes["rows"]["C"]["all"]["items"] == eyes["rows"]["D"]["all"]["items"] == 3 * 4 * 2, "held-out characters: every clip"
    assert mouth["rows"]["C"]["all"]["items"] == 3 * 4 and mouth["rows"]["D"]["all"]["items"] == 0, "D lacks the mouth's opening: left out"
    assert (out / "patches_eyes.png").is_file() and (out / "patches_mouth.png").is_file()
    printed = capsys.readouterr().out
    assert "| D | 0 | — | — | 0 | — | — |" in printed, "a character without the part is shown as such, not scored"


def test_a_subset_of_training_characters_trains_on_fewer_and_scores_the_same_held_out_items(clips, tmp_path):
    out = tmp_path / "out"
    et.main(["--data", str(clips), "--held-out", "C", "D", "--parts", "eyes", "--budget", "0.5", "--size", "32", "--patch", "9",
             "--probe-clips", "1", "--train-characters", "1", "--out", str(out)])
    report = json.loads((out / "expression_transfer.json").read_text())
    assert len(report["training_characters"]) == 1 and report["training_characters"][0] in ("A", "B")
    eyes = report["parts"]["eyes"]
    assert list(report["parts"]) == ["eyes"] and eyes["training_items"] == 2 * 4 * 2, "one character, 2 clips, 4 frames, 2 eyes"
    assert eyes["rows"]["training characters, held-back clips"]["all"]["items"] == 1 * 4 * 2, "only its own held-back clip"
    assert eyes["rows"]["C"]["all"]["items"] == 3 * 4 * 2, "the held-out characters are scored in full"


def test_bad_arguments_stop_with_one_line_before_writing(clips, tmp_path, capsys):
    out = tmp_path / "out"
    for argv, words in ((["--data", str(tmp_path / "none")], "is not a folder"),
                        (["--data", str(clips), "--held-out", "Z"], "--held-out Z: no clips with landmarks"),
                        (["--data", str(clips), "--held-out", "C", "--probe-clips", "3"], "leaves no training clips"),
                        (["--data", str(clips), "--held-out", "C", "D", "--train-characters", "3"], "only 2 characters are not held out"),
                        (["--data", str(clips), "--budget", "0"], "must be positive")):
        with pytest.raises(SystemExit) as exc:
            et.main([*argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
