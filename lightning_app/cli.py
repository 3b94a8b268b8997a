"""``AnimatorCLI``: the LightningCLI of this project (``python cli.py fit|validate|test|predict --config ...``).

The model is always :class:`~modules.AnimatorModule`; its descriptor, backbone, adapter and optimizer, the
DataModule, the callbacks and the loggers are chosen by ``class_path``/``init_args``. The data's
``image_size`` and ``channels`` are linked into the model, so they are set once, under ``data``.
``configs/trainer/default.yaml`` and ``configs/data/puppet.yaml`` are loaded first as defaults for every
subcommand; a ``--config`` given later overrides them.

Errors the user can fix (missing weights, a bad checkpoint) are printed as one message without a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from datamodules.pair_datamodule import PairDataModule
from lightning_app.checkpoints import find_last_checkpoint, verify_checkpoint
from modules.animator_module import AnimatorModule
from modules.errors import CheckpointError, exit_on_user_error

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIGS = [str(CONFIG_DIR / "trainer" / "default.yaml"), str(CONFIG_DIR / "data" / "puppet.yaml")]
SUBCOMMANDS = ("fit", "validate", "test", "predict")


class ProjectCLI(LightningCLI):
    """LightningCLI for one of this project's LightningModules: data in subclass mode, per-concern default
    configs for every subcommand, checked checkpoints and ``--ckpt_path last`` across runs.

    Args:
        model_class: the LightningModule.
        default_configs: YAML files loaded before any ``--config``.
        args, run: as for LightningCLI.
    """

    def __init__(self, model_class: type, default_configs: list[str], args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        defaults = {"default_config_files": default_configs}
        parser_kwargs = {name: defaults for name in SUBCOMMANDS} if run else defaults
        super().__init__(
            model_class,
            LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
            **kwargs,
        )

    def _parse_ckpt_path(self) -> None:
        """Verify an explicit checkpoint file before Lightning reads its hyperparameters (and later its state)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path not in (None, "last", "best", "hpc", "registry"):
            verify_checkpoint(ckpt_path)
        super()._parse_ckpt_path()

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest ``last.ckpt`` under the logger's root, i.e. across earlier runs."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        logger = self.trainer.logger
        root = getattr(logger, "root_dir", None) if logger is not None else None
        found = find_last_checkpoint(root) if root else None
        if found is None:
            raise CheckpointError(f"--ckpt_path last: no last.ckpt under {root or 'the run folder'}; give the checkpoint's path instead")
        rank_zero_info(f"Resuming from the newest last checkpoint: {found}")
        config["ckpt_path"] = str(verify_checkpoint(found))

    before_fit = before_validate = before_test = before_predict = _resolve_last_checkpoint


class AnimatorCLI(ProjectCLI):
    """The AnimatorModule's CLI; the data's ``image_size`` and ``channels`` are linked into the model."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(AnimatorModule, DEFAULT_CONFIGS, args=args, run=run, **kwargs)

    def before_fit(self) -> None:
        """Refuse data that lacks what the descriptor learns from, then resolve ``--ckpt_path last``."""
        if self.model.descriptor.needs_parameters and isinstance(self.datamodule, PairDataModule):
            self.datamodule.require_parameters()
        self._resolve_last_checkpoint()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.init_args.image_size", "model.image_size")
        parser.link_arguments("data.channels", "model.channels", apply_on="instantiate")


def main(args: list[str] | None = None) -> None:
    """Entry point: run the CLI, printing user-facing errors as ``error: ...`` with exit status 2."""
    with exit_on_user_error():
        AnimatorCLI(args=args)
