"""``AnimatorCLI``: the LightningCLI of this project (``python cli.py fit|validate|test|predict --config ...``).

The model is always :class:`~modules.AnimatorModule`; its descriptor, backbone, adapter and optimizer, the
DataModule, the callbacks and the loggers are chosen by ``class_path``/``init_args``. The data's
``image_size`` and ``channels`` are linked into the model, so they are set once, under ``data``.
``configs/trainer/default.yaml`` and ``configs/data/puppet.yaml`` are loaded first as defaults for every
subcommand; a ``--config`` given later overrides them.

``--ckpt_path`` resumes (``fit``) or evaluates a checkpoint *with its own hyper-parameters*: a setting given in a
config file or on the command line that the checkpoint contradicts stops ``fit`` with an error listing each key
(checkpoint value vs requested value), and makes ``validate``/``test``/``predict`` warn with that list — never a
silent swap of the model; settings left at their defaults take the checkpoint's (``fit --ckpt_path last``, resolved
once the model is built, refuses a contradiction; ``validate``/``test``/``predict --ckpt_path last`` take the newest
``last.ckpt`` of the config and data like an explicit path). The
data's image size follows the checkpoint unless ``--data.init_args.image_size`` is on the command line (then
``validate``/``test``/``predict`` warn, ``fit`` refuses). ``--weights_from CKPT`` instead starts a new run of
*this* config from a checkpoint's weights only (no step, optimizer or schedule state; the shapes must match).

Errors the user can fix (missing weights, a bad checkpoint) are printed as one message without a traceback.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.callbacks import ProgressBar
from jsonargparse import Namespace
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from callbacks.run_progress import RunProgress
from core.checkpoint_files import checkpoint_kind, find_last_checkpoint, load_plain_checkpoint, read_hyperparameters, verify_checkpoint
from core.errors import CheckpointError, UserFacingError, exit_on_user_error
from core.files import atomic_write_text, check_folder_path
from core.run_folder import point_latest, run_folder
from datamodules.pair_datamodule import PairDataModule
from lightning_app.checkpoints import hyperparameter_differences
from lightning_app.quiet import quiet_libraries
from modules.animator_module import AnimatorModule

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIGS = [str(CONFIG_DIR / "trainer" / "default.yaml"), str(CONFIG_DIR / "data" / "puppet.yaml")]
SUBCOMMANDS = ("fit", "validate", "test", "predict")
IMAGE_SIZE_KEYS = ("data.init_args.image_size", "data.image_size")
CHECKPOINT_ALIASES = (None, "last", "best", "hpc", "registry")
FOLDER_LOGGERS = ("TensorBoardLogger", "CSVLogger")  # loggers whose folder is save_dir/name/version


def data_label(data: Any) -> str:
    """The data part of a run folder's name, from the data config (``class_path``/``init_args``): the dataset
    folder's name for data read from one (``data/live2d`` → ``live2d``), else the DataModule's (``puppet``), so runs
    of one config on different data do not share versions."""
    if not isinstance(data, (dict, Namespace)):
        return "data"
    root = (data.get("init_args") or {}).get("root")
    if root:
        return Path(str(root)).name
    return str(data.get("class_path", "")).rpartition(".")[2].removesuffix("DataModule").lower() or "data"


class RunConfig(SaveConfigCallback):
    """The resolved config as ``config.yaml`` in the run folder (:func:`~core.run_folder.run_folder`);
    ``fit`` also points ``latest`` at its run folder. ``validate``/``test``/``predict`` of a checkpoint run in
    ``<run>/<stage>/`` (see :meth:`ProjectCLI._log_into_run_folder`), where each replaces the last one's files."""

    def setup(self, trainer: Trainer, pl_module: Any, stage: str) -> None:
        if self.already_saved:
            return
        folder = run_folder(trainer)
        if trainer.is_global_zero:
            path = folder / self.config_filename
            if stage == "fit" and path.exists() and not self.overwrite:
                raise UserFacingError(f"{path} exists: that run folder belongs to another run; give another logger version or name")
            atomic_write_text(path, self.parser.dump(self.config, skip_none=False))
            if stage == "fit" and trainer.loggers:
                point_latest(folder)
        self.already_saved = trainer.strategy.broadcast(True)


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
        parser_kwargs = {name: defaults for name in self.subcommands()} if run else defaults
        super().__init__(
            model_class,
            LightningDataModule,
            subclass_mode_data=True,
            auto_configure_optimizers=False,
            parser_kwargs=parser_kwargs,
            args=args,
            run=run,
            save_config_callback=RunConfig,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--weights_from", type=str | None, default=None,
                            help="start this config from a checkpoint's weights only (no step, optimizer or schedule state); "
                                 "'last': the newest last.ckpt of this logger")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        """Each subcommand's parser has ``--verbose``: Lightning's own for ``validate`` and ``test`` (its results
        table; off for ``test``, whose :class:`~callbacks.EvaluationReport` prints the full one), one of ours for
        ``fit`` and ``predict``. ``--verbose=true`` on the command line also shows what :mod:`lightning_app.quiet`
        leaves out."""
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "verbose" not in parser.get_defaults():
            parser.add_argument("--verbose", type=bool, default=False, help="show every library message (lightning_app.quiet)")
        if subcommand == "test":
            parser.set_defaults(verbose=False)
        return parser

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        self.command_line = [str(a) for a in (sys.argv[1:] if args is None else args)] if not isinstance(args, dict) else []
        if not any(a.lower() in ("--verbose=true", "--verbose=1") for a in self.command_line):
            quiet_libraries()
        super().parse_arguments(parser, args)

    def _on_command_line(self, keys: tuple[str, ...]) -> bool:
        return any(arg == f"--{key}" or arg.startswith(f"--{key}=") for arg in self.command_line for key in keys)

    def _parse_ckpt_path(self) -> None:
        """Verify an explicit checkpoint file and check the requested config against its hyper-parameters before
        Lightning merges them in (and later reads its state)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is not None and config.get("weights_from") is not None:
            raise UserFacingError("give --ckpt_path (resume or evaluate a checkpoint with its own settings) or --weights_from "
                                  "(a new run of this config from its weights), not both")
        self._name_run_folder(config)
        if subcommand != "fit" and ckpt_path == "last":
            ckpt_path = config["ckpt_path"] = self._newest_to_evaluate(config)
        if ckpt_path not in CHECKPOINT_ALIASES:
            verify_checkpoint(ckpt_path)
            self._check_against_checkpoint(subcommand, ckpt_path, before_build=True)
            if subcommand != "fit":
                self._log_into_run_folder(config, Path(ckpt_path))
        if config.get("weights_from") not in (None, "last"):
            verify_checkpoint(config["weights_from"])
        super()._parse_ckpt_path()

    def _logger_config(self, config: Namespace, settings: tuple[str, ...]) -> Namespace | None:
        """The configured logger's ``class_path``/``init_args`` when it keeps its files in ``save_dir/name/version``
        and the command line sets neither another logger nor any of its ``settings``."""
        logger = (config.get("trainer") or {}).get("logger")
        if not isinstance(logger, Namespace) or not str(logger.get("class_path", "")).endswith(FOLDER_LOGGERS):
            return None
        keys = ("trainer.logger", "trainer.logger.class_path", *(f"trainer.logger{part}.{key}" for key in settings for part in ("", ".init_args")))
        return None if self._on_command_line(keys) else logger

    def _log_into_run_folder(self, config: Namespace, ckpt_path: Path) -> None:
        """``validate``/``test``/``predict`` of a checkpoint in ``<run>/checkpoints/`` log into ``<run>/<stage>/``
        (metrics, reports, videos and the config of that command, replacing the previous one's), not into a new
        version beside the training run."""
        path, logger = ckpt_path.resolve(), self._logger_config(config, ("save_dir", "name", "version"))
        if logger is None or path.parent.name != "checkpoints":
            return
        logger.init_args.save_dir, logger.init_args.name, logger.init_args.version = str(path.parent.parent), "", self.config["subcommand"]

    def _name_run_folder(self, config: Namespace) -> None:
        """Name the run folder for config and data (``logs/<config>/<data>/version_N``) unless the command line
        sets the logger or its name."""
        logger = self._logger_config(config, ("name",))
        if logger is not None and logger.init_args.get("name"):
            logger.init_args.name = f"{logger.init_args.name}/{data_label(config.get('data'))}"

    def _newest_to_evaluate(self, config: Namespace) -> str:
        """``validate``/``test``/``predict --ckpt_path last``: the newest ``last.ckpt`` under the logger's root, found
        before anything is built, so that it is checked, evaluated and written into like an explicit path."""
        logger = self._logger_config(config, ())
        if logger is None:
            return "last"  # resolved once the trainer exists (_resolve_last_checkpoint)
        found = self._newest_last("--ckpt_path last", Path(logger.init_args.get("save_dir") or ".") / str(logger.init_args.get("name") or ""))
        rank_zero_info(f"{self.config['subcommand']} of the newest last checkpoint: {found}")
        return str(found)

    def _check_against_checkpoint(self, subcommand: str, ckpt_path: str | Path, before_build: bool) -> None:
        """Refuse settings the checkpoint contradicts when resuming (``fit``) or when the model is built already
        (``not before_build``: ``--ckpt_path last``); else (``validate``/``test``/``predict``) warn and use the
        checkpoint's. The data's image size follows the checkpoint's while the data are not built yet."""
        stored = read_hyperparameters(ckpt_path)
        foreign = set(stored) - set(inspect.signature(self.model_class.__init__).parameters) - {"_class_path"}
        if foreign:
            kind = checkpoint_kind(stored)
            raise CheckpointError(f"--ckpt_path {str(ckpt_path)!r} is {f'an {kind}' if kind else 'another model’s'} checkpoint, not one of "
                                  f"{self.model_class.__name__} (it has settings {', '.join(sorted(foreign)[:4])})")
        config = self.config[subcommand]
        defaults = self.parser._subcommands_action._name_parser_map[subcommand].get_defaults()
        trained_size, data_args = stored.pop("image_size", None), config.get("data", {}).get("init_args")
        stored.pop("channels", None)
        differing = hyperparameter_differences({"model": stored}, {"model": config["model"]}, {"model": defaults["model"]})
        if trained_size is not None and data_args is not None and data_args.get("image_size") != trained_size:
            if not self._on_command_line(IMAGE_SIZE_KEYS) and not before_build:
                raise CheckpointError(f"--ckpt_path last is {str(ckpt_path)!r}, trained at {trained_size}², but the data are "
                                      f"{data_args['image_size']}²: add --data.init_args.image_size={trained_size}")
            if not self._on_command_line(IMAGE_SIZE_KEYS):
                rank_zero_info(f"image size {trained_size} from the checkpoint {str(ckpt_path)!r} (it was trained at {trained_size}²)")
                data_args["image_size"] = trained_size
            elif subcommand == "fit":
                differing["data.init_args.image_size"] = (trained_size, data_args["image_size"])
            else:
                rank_zero_warn(f"{subcommand} at {data_args['image_size']}² a checkpoint trained at {trained_size}² "
                               f"({str(ckpt_path)!r}); leave out --data.init_args.image_size to use {trained_size}")
        if not differing:
            return
        listed = "; ".join(f"{key}: checkpoint {old!r}, requested {new!r}" for key, (old, new) in differing.items())
        if subcommand != "fit" and before_build:
            rank_zero_warn(f"{subcommand} uses the settings of the checkpoint {str(ckpt_path)!r} where they differ from the config — {listed}")
            return
        run_config = Path(ckpt_path).resolve().parent.parent / "config.yaml"
        own = f"--config {run_config}" if run_config.is_file() else "the checkpoint run's own config"
        raise CheckpointError(
            f"--ckpt_path {str(ckpt_path)!r} was trained with other settings than requested — {listed}. "
            f"Use it with {own} (or leave those settings out), or start a new run of these settings from its "
            f"weights with --weights_from {ckpt_path}")

    def _load_weights(self) -> None:
        """``--weights_from``: the checkpoint's weights into the freshly built model; shapes must match."""
        path = self.config_init[self.subcommand].get("weights_from")
        if path is None:
            return
        if path == "last":
            path = str(verify_checkpoint(self._newest_last("--weights_from last")))
        checkpoint = load_plain_checkpoint(path, "--weights_from")
        state = checkpoint.get("state_dict", {})
        self.model.on_load_checkpoint(checkpoint)
        own = self.model.state_dict()
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or reshaped:
            found = [f"{len(missing)} missing (first: {missing[0]})" if missing else "",
                     f"{len(unexpected)} unexpected (first: {unexpected[0]})" if unexpected else "",
                     f"{len(reshaped)} of another shape (first: {reshaped[0]}, checkpoint vs model)" if reshaped else ""]
            raise CheckpointError(f"--weights_from {path!r}: its weights do not fit this config's model: {', '.join(f for f in found if f)}")
        self.model.load_state_dict(state)
        rank_zero_info(f"weights from {path} (a new run: step, optimizer and schedule start afresh)")

    def _newest_last(self, option: str, root: Path | None = None) -> Path:
        """The newest ``last.ckpt`` under ``root`` (default: the built logger's root), i.e. across this config's
        earlier runs on this data."""
        if root is None:
            logger = self.trainer.logger
            root = getattr(logger, "root_dir", None) if logger is not None else None
        found = find_last_checkpoint(root) if root else None
        if found is None:
            raise CheckpointError(f"{option}: no last.ckpt under {root or 'the run folder'}; give the checkpoint's path instead")
        return found

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest ``last.ckpt`` under the logger's root, i.e. across earlier runs, checked
        against the requested config like an explicit path (the data are built by now: a different image size stops)."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        found = verify_checkpoint(self._newest_last("--ckpt_path last"))
        self._check_against_checkpoint(self.subcommand, found, before_build=False)
        rank_zero_info(f"Resuming from the newest last checkpoint: {found}")
        config["ckpt_path"] = str(found)

    def instantiate_classes(self) -> None:
        """Build the configured classes; a setting a constructor refuses (jsonargparse wraps the error in its own)
        becomes one line naming the class, and output folders that cannot be made are refused first."""
        for key in ("trainer.default_root_dir", "trainer.logger.init_args.save_dir"):
            folder = self.config.get(f"{self.config.subcommand}.{key}" if self.config.get("subcommand") else key)
            if isinstance(folder, str):
                check_folder_path(folder, f"--{key}")
        try:
            super().instantiate_classes()
        except (ValueError, TypeError) as exc:
            raise setting_error(exc) from exc

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """The trainer, with :class:`~callbacks.RunProgress` as its progress bar unless the config has one or turns
        bars off."""
        config = self._get(self.config_init, "trainer", default={})
        callbacks = config.get("callbacks") or []
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            config["callbacks"] = [*callbacks, RunProgress()]
        return super().instantiate_trainer(**kwargs)

    def _before_run(self) -> None:
        self._load_weights()
        self._resolve_last_checkpoint()

    before_fit = before_validate = before_test = before_predict = _before_run


class AnimatorCLI(ProjectCLI):
    """The AnimatorModule's CLI; the data's ``image_size`` and ``channels`` are linked into the model."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        super().__init__(AnimatorModule, DEFAULT_CONFIGS, args=args, run=run, **kwargs)

    def before_fit(self) -> None:
        """Refuse data that lacks what the descriptor learns from, then ``--weights_from`` and ``--ckpt_path last``."""
        if self.model.needs_parameters and isinstance(self.datamodule, PairDataModule):
            self.datamodule.require_parameters()
        self._before_run()

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("data.init_args.image_size", "model.image_size")
        parser.link_arguments("data.channels", "model.channels", apply_on="instantiate")


def setting_error(exc: BaseException) -> BaseException:
    """The error a user should see for ``exc`` raised while the configured classes were built: a project error
    anywhere in its chain as it is, else its innermost ``ValueError`` as a :class:`UserFacingError` naming the
    class whose constructor raised it; anything else (a bug) unchanged."""
    chain = [exc]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    for error in chain:
        if isinstance(error, UserFacingError):
            return error
    root = chain[-1]
    if not isinstance(root, ValueError):
        return exc
    frame = root.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    owner = frame.tb_frame.f_locals.get("self") if frame is not None else None
    named = owner is None or type(owner).__name__ in str(root)
    return UserFacingError(str(root) if named else f"{type(owner).__name__}: {root}")


def main(args: list[str] | None = None) -> None:
    """Entry point: run the CLI, printing user-facing errors as ``error: ...`` with exit status 2."""
    with exit_on_user_error():
        AnimatorCLI(args=args)
