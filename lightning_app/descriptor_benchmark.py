"""Which descriptor carries motion best, in minutes: ``python -m lightning_app.descriptor_benchmark --config
configs/benchmarks/descriptors.yaml``.

For every descriptor (a model config, whose descriptor is built as configured — frozen/pretrained or freshly
initialised — or a trained AnimatorModule checkpoint) it describes driving frames of the training characters and
of the held-out characters of a dataset with ground-truth parameters (puppet data or Live2D clips), then reports

* a ridge-regression probe from the descriptor vector to each standard parameter, fit on training characters
  (ridge strength chosen by cross-validation across characters), **R² on held-out characters**, both on the
  vectors as they are (``r2_mean``) and on vectors centred per character (``r2``, per parameter, and
  ``r2_centred_mean``: each character's mean descriptor removed, as when motion is transferred relative to a
  portrait; uses no labels) — higher carries more motion;
* **identity leakage**: accuracy of a linear classifier of the held-out character from the descriptor (fit on
  half of their frames, scored on the other half; lower is better for a motion descriptor), beside chance.

Prints a table, writes ``descriptor_benchmark.json`` to ``--out`` and logs the numbers to a TensorBoard logger
there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentParser
from lightning.pytorch.loggers import TensorBoardLogger
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader, Dataset, Subset

from core.errors import UserFacingError, exit_on_user_error
from core.files import atomic_write_text
from core.vocabulary import PARAMETER_NAMES
from datamodules.pair_datamodule import PairDataModule
from modules.animator_checkpoint import load_animator
from modules.descriptors.base import MotionDescriptor
from modules.probes import centre_by_group, identity_leakage, ridge_probe


def load_descriptor(path: str) -> MotionDescriptor:
    """The descriptor of a model config YAML (``model.descriptor``) or of an AnimatorModule checkpoint."""
    file = Path(path)
    if file.suffix == ".ckpt":
        return load_animator(file).descriptor
    try:
        spec = yaml.safe_load(file.read_text())["model"]["descriptor"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise UserFacingError(f"{path!r}: expected a model config with model.descriptor, or a .ckpt checkpoint ({exc})") from exc
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MotionDescriptor, "descriptor")
    return parser.instantiate(parser.parse_object({"descriptor": spec})).descriptor


@torch.no_grad()
def describe(descriptor: MotionDescriptor, dataset: Dataset, frames: int, batch_size: int, workers: int) -> dict[str, torch.Tensor]:
    """Descriptor vectors ``N×D``, parameters ``N×P`` and character labels ``N`` of the driving frames of the
    first ``frames`` pairs of ``dataset``."""
    loader = DataLoader(Subset(dataset, range(min(frames, len(dataset)))), batch_size=batch_size, num_workers=workers)
    out: dict[str, list[torch.Tensor]] = {"vectors": [], "params": [], "identities": []}
    for batch in loader:
        out["vectors"].append(descriptor(batch["driving"]).vector.float())
        out["params"].append(batch["driving_params"])
        out["identities"].append(batch["driving_identity"])
    return {key: torch.cat(value) for key, value in out.items()}


def benchmark(descriptors: dict[str, str], data: PairDataModule, frames: int, batch_size: int, seed: int) -> list[dict]:
    """One result row per descriptor (see the module docstring)."""
    rows = []
    for name, path in descriptors.items():
        torch.manual_seed(seed)
        descriptor = load_descriptor(path).eval()
        start = time.perf_counter()
        train = describe(descriptor, data.train_set, frames, batch_size, data.num_workers)
        held = describe(descriptor, data.val_set, frames, batch_size, data.num_workers)
        r2_absolute, alpha = ridge_probe(train["vectors"], train["params"], train["identities"], held["vectors"], held["params"])
        r2, alpha_centred = ridge_probe(centre_by_group(train["vectors"], train["identities"]), train["params"], train["identities"],
                                        centre_by_group(held["vectors"], held["identities"]), held["params"])
        accuracy, chance = identity_leakage(held["vectors"], held["identities"])
        rows.append({
            "descriptor": name, "source": path, "dim": int(train["vectors"].shape[1]),
            "r2": {p: (None if torch.isnan(v) else round(float(v), 4)) for p, v in zip(PARAMETER_NAMES, r2)},
            "r2_centred_mean": round(float(r2.nanmean()), 4), "r2_mean": round(float(r2_absolute.nanmean()), 4),
            "ridge_alpha": alpha, "ridge_alpha_centred": alpha_centred,
            "identity_accuracy": round(accuracy, 4), "identity_chance": round(chance, 4),
            "held_out_characters": int(held["identities"].unique().numel()), "seconds": round(time.perf_counter() - start, 1),
        })
    return rows


def print_table(rows: list[dict], console: Console) -> None:
    table = Table(title="descriptor benchmark, held-out characters: R² of ridge probes (per parameter: centred per character); identity leakage (lower is better)")
    for column in ("descriptor", "D", *(p.removeprefix("Param") for p in PARAMETER_NAMES), "mean R² centred", "mean R² as is", "identity acc", "chance"):
        table.add_column(column, justify="left" if column == "descriptor" else "right")
    for row in rows:
        r2 = [("–" if v is None else f"{v:.2f}") for v in row["r2"].values()]
        table.add_row(row["descriptor"], str(row["dim"]), *r2, f"{row['r2_centred_mean']:.3f}", f"{row['r2_mean']:.3f}",
                      f"{row['identity_accuracy']:.2f}", f"{row['identity_chance']:.2f}")
    console.print(table)


def parse_descriptors(entries: list[str]) -> dict[str, str]:
    """``NAME=PATH`` or ``PATH`` (named by its file stem) → ``{name: path}``."""
    named = {}
    for entry in entries:
        name, _, path = entry.rpartition("=")
        named[name or Path(path).stem] = path
    return named


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(description=__doc__, default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file with any of the options below")
    parser.add_subclass_arguments(PairDataModule, "data", required=True, help="dataset with ground-truth parameters")
    parser.add_argument("--descriptors", type=list[str], required=True, help="model configs (.yaml) or AnimatorModule checkpoints (.ckpt); NAME=PATH names a row")
    parser.add_argument("--frames", type=int, default=512, help="frames described per split")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("logs/descriptor_benchmark"))
    config = parser.parse_args(argv)
    with exit_on_user_error():
        data = parser.instantiate(config).data
        rows = benchmark(parse_descriptors(config.descriptors), data, config.frames, config.batch_size, config.seed)
    print_table(rows, Console(width=200))
    config.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config.out / "descriptor_benchmark.json", json.dumps(rows, indent=1))
    logger = TensorBoardLogger(str(config.out), name="", version="")
    for row in rows:
        metrics = {f"probe/{row['descriptor']}/{key}": row[key] for key in ("r2_mean", "r2_centred_mean", "identity_accuracy")}
        metrics.update({f"probe/{row['descriptor']}/r2/{p}": v for p, v in row["r2"].items() if v is not None})
        logger.log_metrics(metrics, step=0)
    logger.finalize("success")
    print(f"wrote {config.out / 'descriptor_benchmark.json'}")


if __name__ == "__main__":
    main()
