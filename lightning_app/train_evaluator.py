"""Train the evaluator networks: ``python -m lightning_app.train_evaluator --config configs/eval/evaluator.yaml``.

A LightningCLI (``fit``/``validate``/``test`` subcommands are implied: ``fit`` when none is given) for
:class:`~modules.evaluator.EvaluatorModule` on any pair DataModule with keypoints and parameters (the puppet by
default, ``--config configs/data/live2d.yaml`` for rendered Live2D clips). Only the training characters are
learnt; validation on held-out characters gives the metrics' noise floors.
"""

from __future__ import annotations

import sys

from core.errors import exit_on_user_error
from lightning_app.cli import CONFIG_DIR, ProjectCLI, SUBCOMMANDS
from modules.evaluator import EvaluatorModule

DEFAULT_CONFIGS = [str(CONFIG_DIR / "data" / "puppet.yaml")]


def main(args: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] not in (*SUBCOMMANDS, "-h", "--help"):
        args = ["fit", *args]
    with exit_on_user_error():
        ProjectCLI(EvaluatorModule, DEFAULT_CONFIGS, args=args)


if __name__ == "__main__":
    main()
