"""Train the MediaPipe-to-canonical adapter of a trained animator::

    python -m lightning_app.train_adapter fit --config configs/adapter/human.yaml \\
        --model.animator ANIMATOR.ckpt --data.landmarker face_landmarker.task [--config configs/adapter/live2d.yaml]

A LightningCLI (``fit``/``validate`` subcommands; ``fit`` when none is given) for
:class:`~modules.adapter_module.AdapterModule` on :class:`~datamodules.adapter_datamodule.AdapterPairDataModule`,
with the conventions of ``cli.py``: ``--config``, ``--print_config``, run folders ``logs/adapter/<data>/version_N``,
``--ckpt_path last`` to resume. ``configs/adapter/trainer.yaml`` is always the first config; the route configs
(``configs/adapter/live2d.yaml``: rendered clips; ``configs/adapter/human.yaml``: human videos rendered on the
training characters) combine. The model labels the pairs (it is linked into the data as their target space) and its
window is the data's. The animator with the trained adapter is written to ``<run>/animator.ckpt``
(:class:`~callbacks.AnimatorExport`) and the report — per route and split, :mod:`modules.adapter_metrics` — is
printed as a table.
"""

from __future__ import annotations

import sys
import warnings
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from rich.console import Console
from rich.table import Table

from core.errors import UserFacingError, exit_on_user_error
from lightning_app.cli import CONFIG_DIR, ProjectCLI
from modules.adapter_module import AdapterModule

TRAINER_CONFIG = CONFIG_DIR / "adapter" / "trainer.yaml"
SUBCOMMANDS = ("fit", "validate")


def print_report(report: dict[str, dict[str, float]], data: dict[str, float]) -> None:
    """One column per route and split, one row per measure; then the data's own numbers."""
    table = Table(title="adapter: R² of the descriptor vectors (rel: each sequence's mean removed); correlation of the implied parameters "
                        "with the geometric reading (r) and its ceiling (the targets' implied parameters); jitter ratio")
    table.add_column("measure")
    for column in report:
        table.add_column(column, justify="right")
    for measure in dict.fromkeys(k for row in report.values() for k in row):
        table.add_row(measure, *(f"{row[measure]:.2f}" if measure in row else "" for row in report.values()))
    Console(width=160).print(table)
    print("  ".join(f"{k}={v:.3g}" for k, v in data.items()))


class AdapterCLI(ProjectCLI):
    """The AdapterModule's CLI: the model is the data's target space and its window is the data's.

    ``configs/adapter/trainer.yaml`` is the first ``--config`` of a subcommand rather than a default config file:
    jsonargparse 4.53 drops the ``class_path`` of the optimizer (a callable with a class as its default) from default
    config files and then refuses them."""

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any) -> None:
        warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")  # the frozen animator, by design
        args = list(sys.argv[1:] if args is None else args)
        if args and args[0] in SUBCOMMANDS:
            args = [args[0], f"--config={TRAINER_CONFIG}", *args[1:]]
        super().__init__(AdapterModule, [], args=args, run=run, **kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """``fit`` and ``validate`` (the module has no test or predict step)."""
        return {name: skip for name, skip in LightningCLI.subcommands().items() if name in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        super().add_arguments_to_parser(parser)
        parser.link_arguments("model.window", "data.init_args.window")
        parser.link_arguments("model", "data.init_args.target_space", apply_on="instantiate")

    def _report(self) -> None:
        data = {"train_windows": float(len(self.datamodule.train_windows()[0]))} | {
            f"{route}_face_rate": rate for route, rate in self.datamodule.face_rates().items()}
        print_report(self.model.report, data)

    def after_fit(self) -> None:
        self._report()

    def after_validate(self) -> None:
        self._report()


OLD_FLAGS = {"--animator": "--model.animator", "--landmarker": "--data.landmarker", "--clips": "--data.clips (or --config configs/adapter/live2d.yaml)",
             "--videos": "--data.videos (or --config configs/adapter/human.yaml)", "--held-out": "--data.held_out", "--window": "--model.window",
             "--out": "nothing: the run folder's animator.ckpt", "--steps": "--trainer.max_steps"}
"""Flags of the hand-written training loop this CLI replaced, and what to give now."""


def main(args: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
        args = ["fit", *args]
    with exit_on_user_error():
        old = [flag for flag in OLD_FLAGS if any(a == flag or a.startswith(f"{flag}=") for a in args)]
        if old:
            raise UserFacingError("train_adapter is a LightningCLI now (configs/adapter/, README): " + "; ".join(f"{flag} → {OLD_FLAGS[flag]}" for flag in old))
        AdapterCLI(args=args)


if __name__ == "__main__":
    main()
