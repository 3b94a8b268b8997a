"""The W&B descriptor sweep: every argument list the agent would build is accepted by the CLI, and a run starts
and logs to W&B (offline)."""

import itertools
from pathlib import Path

import pytest
import wandb
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from conftest import ROOT, TINY, run_cli

SWEEP = yaml.safe_load((ROOT / "configs" / "sweeps" / "descriptors.yaml").read_text())


def agent_commands() -> list[list[str]]:
    """Each grid point's command, expanded the way ``wandb agent`` does (``${env}`` dropped, ``python`` kept)."""
    names = list(SWEEP["parameters"])
    choices = [spec["values"] if "values" in spec else [spec["value"]] for spec in SWEEP["parameters"].values()]
    commands = []
    for point in itertools.product(*choices):
        args = create_sweep_command_args({"args": {name: {"value": value} for name, value in zip(names, point)}})["args"]
        expanded = []
        for item in SWEEP["command"]:
            expanded += args if item == "${args}" else [] if item == "${env}" else [SWEEP["program"] if item == "${program}" else item]
        commands.append(expanded)
    return commands


def cli_arguments(command: list[str]) -> list[str]:
    assert command[:2] == ["python", "cli.py"], command
    return [arg.replace("configs/", f"{ROOT}/configs/") for arg in command[2:]]


def dino_offline(arguments: list[str]) -> list[str]:
    return arguments + ["--model.descriptor.init_args.pretrained=false"] if any("dino" in a for a in arguments) else arguments


def test_every_grid_point_parses(capsys):
    commands = agent_commands()
    assert len(commands) == 3 * 2 * 2 * 2
    for command in commands:
        with pytest.raises(SystemExit) as exit_info:
            run_cli([*cli_arguments(command), "--print_config"])
        assert exit_info.value.code in (0, None), command
        printed = yaml.safe_load(capsys.readouterr().out)
        values = dict(arg.removeprefix("--").split("=", 1) for arg in command[3:-1])
        assert printed["model"]["backbone"]["class_path"] == values["model.backbone"]
        assert printed["model"]["motion_loss"] == values["model.motion_loss"]
        assert float(printed["model"]["losses"]["motion"]) == float(values["model.losses.motion"]), "the swept value beats the config's"
        assert printed["trainer"]["logger"]["class_path"].endswith("WandbLogger")


@pytest.mark.parametrize("index", [0, 13])  # keypoints + FiLM U-Net; semantic + warping generator
def test_a_sweep_run_starts_and_logs_to_wandb(tmp_path, monkeypatch, index):
    monkeypatch.chdir(tmp_path)
    command = agent_commands()[index]
    arguments = dino_offline(cli_arguments(command)) + TINY + [
        "--trainer.max_steps=2", "--trainer.val_check_interval=2", f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--trainer.default_root_dir=" + str(tmp_path),
    ]
    try:
        cli = run_cli(arguments)
    finally:
        wandb.finish()  # the agent runs each in its own process; here the next test must not reuse this run
    assert type(cli.trainer.logger).__name__ == "WandbLogger" and cli.trainer.global_step == 2
    assert list(Path(tmp_path).glob("wandb/offline-run-*")), "an offline W&B run was written"
