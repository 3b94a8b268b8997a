"""Compare trained animators side by side on the same evaluation pairs.

    python benchmarks/compare_checkpoints.py \
        --run keypoints=configs/keypoints.yaml@logs/keypoints/version_0/checkpoints/last.ckpt \
        --run semantic=configs/semantic.yaml@logs/semantic/version_0/checkpoints/last.ckpt \
        --evaluator logs/evaluator/version_0/checkpoints/last.ckpt \
        -- --config configs/data/live2d.yaml --data.init_args.root data/live2d

Each run is ``NAME=CONFIG[@CHECKPOINT]`` (no checkpoint: the config's untrained model, a baseline). Every run is
``cli.py test`` with the same data arguments (given after ``--``) and the self/cross protocols, so all see the
same pairs; the table has one column per run and one row per protocol group and metric. The combined results
are also written to ``--out/comparison.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.files import atomic_write_text  # noqa: E402
from lightning_app.cli import AnimatorCLI  # noqa: E402


def evaluate(name: str, config: str, checkpoint: str | None, evaluator: str | None, data_args: list[str], out: Path) -> dict:
    """Run ``test`` for one run and return its evaluation results (group → metric → value)."""
    args = [
        "test", f"--config={config}", *data_args, "--data.init_args.test_protocols=[self, cross]",
        "--trainer.logger=TensorBoardLogger", f"--trainer.logger.save_dir={out}", f"--trainer.logger.name={name}",
        "--trainer.enable_progress_bar=false",
    ]
    if evaluator:
        args.append(f"--trainer.callbacks.evaluator={evaluator}")
    if checkpoint:
        args.append(f"--ckpt_path={checkpoint}")
    cli = AnimatorCLI(args=args)
    return json.loads((Path(cli.trainer.log_dir) / "evaluation" / "evaluation.json").read_text())["results"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    data_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=CONFIG[@CHECKPOINT]; give two or more")
    parser.add_argument("--evaluator", help="EvaluatorModule checkpoint for AKD/APE/AED")
    parser.add_argument("--out", type=Path, default=Path("logs/comparison"))
    args = parser.parse_args(argv)
    results = {}
    for run in args.run:
        name, _, spec = run.partition("=")
        config, _, checkpoint = spec.partition("@")
        if not name or not config:
            parser.error(f"--run {run!r}: expected NAME=CONFIG[@CHECKPOINT]")
        results[name] = evaluate(name, config, checkpoint or None, args.evaluator, data_args, args.out)
    rows = sorted({(group, metric) for r in results.values() for group, metrics in r.items() for metric in metrics})
    table = Table(title="the same evaluation pairs, one column per run")
    for column in ("group", "metric", *results):
        table.add_column(column, justify="left" if column in ("group", "metric") else "right")
    for group, metric in rows:
        table.add_row(group, metric, *(f"{r[group][metric]:.4f}" if metric in r.get(group, {}) else "–" for r in results.values()))
    Console(width=200).print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "comparison.json", json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
