"""A checkpoint's settings against the requested ones: ``--ckpt_path`` never swaps the model silently (resuming
with other settings stops, listing the keys, before any output folder exists; evaluating warns and uses the
checkpoint's), the data's image size follows the checkpoint, and ``--weights_from`` starts a new run of another
config from the weights only."""

from pathlib import Path

import pytest
import torch

from conftest import TINY, run_cli, tiny_args
from lightning_app.cli import main

SIZE_ARG = "--data.init_args.image_size=64"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``last.ckpt`` of a 2-step keypoints run at 64²."""
    root = tmp_path_factory.mktemp("trained")
    run_cli(tiny_args(root, steps=2))
    return next((root / "logs").glob("**/checkpoints/last.ckpt"))


def error_of(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    return lines[0]


def without_size(args: list[str]) -> list[str]:
    assert SIZE_ARG in TINY
    return [a for a in args if a != SIZE_ARG]


def test_resuming_with_another_descriptor_or_width_is_refused_listing_the_keys(trained, tmp_path, capsys):
    other_config = error_of(tiny_args(tmp_path, config="semantic.yaml", extra=[f"--ckpt_path={trained}"]), capsys)
    assert "model.descriptor.class_path: checkpoint 'modules.descriptors.KeypointDescriptor', requested 'modules.descriptors.SemanticDescriptor'" in other_config
    assert f"--weights_from {trained}" in other_config and str(trained.parent.parent / "config.yaml") in other_config
    wider = error_of(tiny_args(tmp_path, extra=[f"--ckpt_path={trained}", "--model.backbone.init_args.width=48"]), capsys)
    assert "model.backbone.init_args.width: checkpoint 32, requested 48" in wider and "descriptor" not in wider
    assert not (tmp_path / "logs").exists(), "refused before any output folder"


def test_evaluating_with_other_settings_warns_and_uses_the_checkpoints(trained, tmp_path):
    with pytest.warns(UserWarning, match=r"validate uses the settings of the checkpoint .* model.backbone.init_args.width: checkpoint 32, requested 48"):
        cli = run_cli(tiny_args(tmp_path, subcommand="validate", extra=[f"--ckpt_path={trained}", "--model.backbone.init_args.width=48"]))
    assert cli.model.backbone.stem.out_channels == 32


def test_last_is_checked_too(trained, capsys):
    root = trained.parents[4]  # <root>/logs/run/version_0/checkpoints/last.ckpt
    message = error_of(tiny_args(root, extra=["--ckpt_path=last", "--model.backbone.init_args.width=48"]), capsys)
    assert "model.backbone.init_args.width: checkpoint 32, requested 48" in message


def test_the_checkpoint_image_size_is_used_unless_given(trained, tmp_path):
    config = tmp_path / "size.yaml"
    config.write_text("data:\n  init_args:\n    image_size: 128\n")  # a config file's size: not "given" on the command line
    followed = run_cli(without_size(tiny_args(tmp_path, subcommand="validate", extra=[f"--config={config}", f"--ckpt_path={trained}"])))
    assert followed.datamodule.val_set.image_size == 64 and followed.model.image_size == 64
    with pytest.warns(UserWarning, match=r"validate at 96² a checkpoint trained at 64²"):
        overridden = run_cli(without_size(tiny_args(tmp_path, subcommand="validate", extra=[f"--ckpt_path={trained}", "--data.init_args.image_size=96"])))
    assert overridden.datamodule.val_set.image_size == 96


def test_weights_from_starts_a_new_run_from_the_weights(trained, tmp_path, capsys):
    stored = torch.load(trained, map_location="cpu", weights_only=True)["state_dict"]
    root = trained.parents[4]  # <root>/logs/run/version_0/checkpoints/last.ckpt: "last" finds it
    cli = run_cli(tiny_args(root, steps=1, extra=["--weights_from=last", "--model.optimizer.init_args.lr=0"]))
    assert cli.trainer.global_step == 1, "a new run: its steps start at 0"
    for name, parameter in cli.model.named_parameters():
        assert torch.equal(parameter.detach(), stored[name]), f"{name}: with lr 0 the weights stay the checkpoint's"
    misfit = error_of(tiny_args(tmp_path / "misfit", extra=[f"--weights_from={trained}", "--model.backbone.init_args.width=48"]), capsys)
    assert "do not fit this config's model" in misfit and "of another shape" in misfit
    both = error_of(tiny_args(tmp_path / "both", extra=[f"--weights_from={trained}", f"--ckpt_path={trained}"]), capsys)
    assert "not both" in both
