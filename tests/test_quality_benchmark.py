"""benchmarks/quality.py end to end on a small puppet clip dataset (no licensed data): equal budgets, held-out
scores against the no-motion floor, strips, and one-line errors before anything is written."""

import json
import sys
from functools import partial
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, write_puppet_clips
from core.vocabulary import PARAMETER_NAMES
from datamodules import PuppetPairs
from datamodules.live2d.trajectories import random_trajectory
from datamodules.puppet import PuppetIdentity, render_puppet
from modules import AnimatorModule
from modules.backbones import WarpingGenerator
from modules.descriptors import RigDescriptor

sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    return write_puppet_clips(tmp_path_factory.mktemp("clips"), {"A": 11, "B": 12, "C": 13, "D": 14}, clips=1, replays=2, frames=6, size=32)


def test_benchmark_trains_each_run_for_the_budget_and_scores_held_out_characters(clips, tmp_path, capsys):
    out = tmp_path / "out"
    quality.main(["--data", str(clips), "--held-out", "C", "D", "--budget", "4", "--size", "32", "--batch", "4", "--workers", "0",
                  "--eval-clips", "2", "--eval-frames", "6", "--fps-size", "32", "--out", str(out),
                  "--run", "rig=configs/rig.yaml --model.backbone.init_args.width=8 --model.backbone.init_args.depth=1",
                  "--run", "kp=configs/keypoints.yaml,configs/backbone/expression_pose.yaml --model.backbone.init_args.depth=1"])
    report = json.loads((out / "quality.json").read_text())
    assert [r["name"] for r in report["results"]] == ["rig", "kp"]
    for result in report["results"]:
        scores = result["scores"]
        assert result["steps"] > 0 and result["fps"] > 0
        for character in ("C", "D"):
            for kind in ("floor", "abs", "rel", "rel+scale", "own"):
                assert 0 < scores[f"cross/l1/{kind}/{character}"] < 1, (kind, character)
        assert scores["self/l1/floor"] > 0 and scores["self/face/floor"] > scores["self/l1/floor"], "expression pixels change most"
        assert result["cross_kind"] == "rel", "animate's default transfer: relative, without the movement scale"
    first, second = (r["scores"] for r in report["results"])
    assert first["self/l1/flow"] < first["self/l1/floor"] and first["cross/l1/flow"] < first["cross/l1/floor"], "a warp that reads the target beats the copy"
    assert not any(key.endswith("/flow") or "/flow/" in key for key in second), "the model-free ceiling is scored once"
    assert 0 < first["self/l1/affine"] and 0 < first["cross/l1/affine/C"], "registration alone is scored with the first run"
    assert not any("/affine" in key for key in second)
    model = AnimatorModule.load_from_checkpoint(out / "kp.ckpt")
    assert type(model.backbone).__name__ == "ExpressionPoseGenerator" and model.image_size == 32, "the trained model is kept"
    strip = Image.open(out / "strip_rig.png")
    assert strip.size[0] > strip.size[1] / 12 * 3, "four columns, twelve rows"
    assert len(report["strip_rows"]) == 12 and {p for p, _ in report["strip_rows"]} == {"self", "cross"}
    printed = capsys.readouterr().out
    headline = next(line for line in printed.splitlines() if line.startswith("| kp | "))
    worst = max("CD", key=lambda c: second[f"cross/l1/rel/{c}"] / second[f"cross/l1/floor/{c}"])
    assert "| rel: " in headline and f"%) {worst} |" in headline, "the headline names the worst portrait in animate's transfer"
    assert "own motion (reads the target)" in printed.split("| kp | D |")[0], "the per-portrait table has the perfect-transfer column"
    assert not any(key.startswith("self/") and "/own" in key for key in first), "own motion is the target's: the same as abs in self"
    assert "a warp that reads the target" in printed and "registration alone" in printed and "| rig |" in printed and "| kp | D |" in printed and "benchmark ETA" not in printed.split("held-out characters")[1]


def test_floor_is_the_portrait_itself(clips):
    rows = {"l1/floor": torch.tensor([0.1, 0.3]), "face/floor": torch.tensor([0.2, float("nan")]), "character": ["C", "D"],
            "l1/abs": torch.tensor([0.05, 0.3]), "face/abs": torch.tensor([0.1, 0.1])}
    scores = quality.summarise({"self": rows})
    assert scores["self/l1/floor"] == pytest.approx(0.2) and scores["self/face/floor"] == pytest.approx(0.2), "empty face masks are left out"
    assert scores["self/l1/abs/C"] == pytest.approx(0.05) and quality.under(0.05, 0.1) == "0.0500 (+50 %)"


def test_parameter_driven_animation_registers_as_animate_does():
    """The "driven by the true parameters" rows with a rig descriptor and registration keypoints: where no parameter is
    known (NaN) the reading stands, so the prediction is ``animate``'s own — registration included, absolute and
    relative. The rig reads the same parameters from every frame here: the rows take the Jacobians the relative
    parameters imply, ``animate`` composes the read ones, and those agree only where the parameters do not change."""
    torch.manual_seed(0)
    pairs = PuppetPairs(list(range(4)), length=4, image_size=64, seed=0)
    frames = torch.stack([pairs[i]["source"] for i in range(4)])
    animator = AnimatorModule(descriptor=RigDescriptor(input_size=32, expression_jacobians=True),
                              backbone=partial(WarpingGenerator, width=8, motion_width=8, refine=False), image_size=64,
                              registration=[[0.0, 0.0, 1.0], [0.0, 0.25, 0.5]]).eval()
    torch.nn.init.zeros_(animator.descriptor.parameter_head.weight)
    torch.nn.init.constant_(animator.descriptor.parameter_head.bias, -0.5)  # half-closed eyes: Jacobians away from the identity
    unknown = torch.full((4, len(PARAMETER_NAMES)), float("nan"))
    batch = {"source": frames, "driving": frames.roll(1, 0), "driving_first": frames.roll(2, 0), "source_params": unknown, "driving_params": unknown}
    with torch.no_grad():
        expected = animator.animate(batch["source"], batch["driving"], batch["driving_first"], scale_movement=False)
        for relative, kind in ((False, "absolute"), (True, "relative")):
            driven = quality.animate_with_true_parameters(animator, batch, relative=relative)
            assert torch.allclose(driven, expected[kind], atol=1e-5), kind


def test_cross_identity_is_headlined_in_the_transfer_animate_uses():
    assert quality.transfer_kind(SimpleNamespace(adapt_movement_scale=True)) == "rel+scale"
    assert quality.transfer_kind(SimpleNamespace(adapt_movement_scale=False)) == "rel"


def test_the_flow_ceiling_moves_the_portrait_onto_the_target_and_cannot_invent_what_it_lacks():
    image = render_puppet(PuppetIdentity.from_seed(11), random_trajectory(0, 1)[0], 64).image
    frame = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    shifted = torch.roll(frame, shifts=(2, -3), dims=(-2, -1))  # the character 2 px down, 3 px left
    floor = (frame - shifted).abs().mean()
    assert quality.optical_flow_warp(frame, frame).sub(frame).abs().mean() < 0.02 * floor, "nothing moves: the portrait comes back"
    assert quality.optical_flow_warp(frame, shifted).sub(shifted).abs().mean() < 0.25 * floor, "a pure move is undone"
    spot = shifted.clone()
    spot[..., 28:36, 28:36] = torch.tensor([1.0, 0.0, 1.0])[:, None, None]  # magenta the portrait has nowhere
    warped = quality.optical_flow_warp(frame, spot)
    assert (warped[..., 28:36, 28:36] - spot[..., 28:36, 28:36]).abs().mean() > 0.3, "new content is left to synthesis"


def test_bad_arguments_stop_with_one_line_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    for argv, words in ((["--data", str(tmp_path / "none")], "is not a folder"),
                        (["--data", str(tmp_path), "--run", "x=configs/nothing.yaml"], "not found: configs/nothing.yaml"),
                        (["--data", str(tmp_path), "--budget", "0"], "must be positive")):
        with pytest.raises(SystemExit) as exc:
            quality.main([*argv, "--out", str(out)])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and words in err and "Traceback" not in err
    assert not out.exists()
