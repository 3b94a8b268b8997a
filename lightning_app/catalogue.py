"""The catalogue of trained checkpoints: ``python -m lightning_app.catalogue logs/ --out CATALOGUE.md``.

Generated, never hand-edited. One section per checkpoint found below the given folders (``**/*.ckpt``; a
``latest`` link and the file it points at count once), newest first:

* the file: path, size, sha256, global step, when it was written;
* the model: descriptor, backbone and adapter (``class_path`` and every ``init_args`` entry, as resolved when the
  run started), losses, optimizer;
* the data: DataModule, image size, dataset folder and held-out characters (rendered clips) or identity counts
  (puppets);
* every metric the run has: the last logged value of each ``val/`` and ``test/`` scalar in its TensorBoard
  events or ``metrics.csv``, each ``evaluation.json`` of its ``test`` runs, and its row of a quality benchmark
  (``quality.json`` beside a benchmark's checkpoint: steps, frames/s and the mean scores).

Checkpoints are read with ``weights_only=True``, so listing them runs no code from them; one that holds pickled
objects (an adapter checkpoint that ``train_adapter`` wrote before checkpoints were plain data) is listed with its
hash and that reason.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from core.checkpoint_files import load_plain_checkpoint
from core.errors import CheckpointError, UserFacingError, exit_on_user_error
from core.files import atomic_write_text
from lightning_app.checkpoints import flatten_config

MODEL_KEYS = ("descriptor", "backbone", "adapter", "losses", "optimizer", "motion_loss", "reconstruction_beta", "teacher_forcing",
              "adapt_movement_scale")
DATA_KEYS = ("image_size", "root", "held_out", "train_identities", "held_out_identities", "batch_size", "augmentation")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_checkpoints(roots: list[Path]) -> list[Path]:
    """Every ``*.ckpt`` below ``roots``, each real file once, newest first."""
    found: dict[Path, Path] = {}
    for root in roots:
        for path in sorted(root.rglob("*.ckpt")):
            found.setdefault(path.resolve(), path)
    return sorted(found.values(), key=lambda p: p.stat().st_mtime, reverse=True)


def logged_metrics(run: Path) -> dict[str, float]:
    """The last value of each ``val/``/``test/`` scalar in ``run``'s TensorBoard events and ``metrics.csv``
    (its ``validate``/``test`` subfolders included)."""
    values: dict[str, tuple[int, float]] = {}
    for events in sorted(run.glob("**/events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags().get("scalars", []):
            if tag.startswith(("val/", "test/")):
                last = accumulator.Scalars(tag)[-1]
                values[tag] = (last.step, last.value)
    for table in sorted(run.glob("**/metrics.csv")):
        with open(table, newline="") as handle:
            for row in csv.DictReader(handle):
                for key, value in row.items():
                    if key and key.startswith(("val/", "test/")) and value not in ("", None):
                        values[key] = (int(row.get("step") or 0), float(value))
    return {key: value for key, (_, value) in sorted(values.items())}


def evaluation_reports(run: Path) -> dict[str, dict[str, dict[str, float]]]:
    """``evaluation.json`` results of the run's ``test`` commands, by their folder relative to the run."""
    return {str(path.parent.relative_to(run)): json.loads(path.read_text())["results"] for path in sorted(run.glob("**/evaluation/evaluation.json"))}


def quality_row(checkpoint: Path) -> dict[str, Any] | None:
    """The quality benchmark's row for a checkpoint it wrote (``<run name>.ckpt`` beside ``quality.json``)."""
    report = checkpoint.parent / "quality.json"
    if not report.is_file():
        return None
    for row in json.loads(report.read_text()).get("results", []):
        if row.get("name") == checkpoint.stem:
            scores = {k: v for k, v in row.get("scores", {}).items() if k.count("/") == 2}  # means, not per character
            return {"steps": row.get("steps"), "fps": row.get("fps"), "held_out": json.loads(report.read_text())["settings"].get("held_out"), **scores}
    return None


def describe(path: Path) -> dict[str, Any]:
    """Everything the catalogue says about one checkpoint."""
    entry: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size, "sha256": sha256(path),
                             "written": datetime.fromtimestamp(path.stat().st_mtime, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        checkpoint = load_plain_checkpoint(path)
    except CheckpointError as exc:
        entry["note"] = f"not read: {exc}"
        return entry
    hparams = checkpoint.get("hyper_parameters") or {}
    entry["step"] = checkpoint.get("global_step")
    entry["model"] = flatten_config({k: hparams[k] for k in MODEL_KEYS if k in hparams})
    if "encoder" in hparams or "animator" in hparams:  # an evaluator's, or an adapter run's training state
        entry["model"] = flatten_config({k: v for k, v in hparams.items() if not k.startswith("_")})
    data = checkpoint.get("datamodule_hyper_parameters") or {}
    entry["data"] = {"class": data.get("_class_path"), **flatten_config({k: data[k] for k in DATA_KEYS if k in data})} if data else {}
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    entry["metrics"] = logged_metrics(run) if path.parent.name == "checkpoints" else {}
    entry["evaluation"] = evaluation_reports(run) if path.parent.name == "checkpoints" else {}
    entry["quality"] = quality_row(path)
    return entry


def _value(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value) if isinstance(value, (int, bool)) else f"`{value}`"


def render(entries: list[dict[str, Any]], roots: list[Path]) -> str:
    """The catalogue as Markdown."""
    lines = ["# Catalogue of checkpoints", "",
             f"Generated by `python -m lightning_app.catalogue {' '.join(str(r) for r in roots)}` — do not edit; "
             f"{len(entries)} checkpoints, newest first.", ""]
    for entry in entries:
        lines += [f"## `{entry['path']}`", "", "| | |", "|---|---|"]
        for key in ("step", "written", "bytes", "sha256", "note"):
            if entry.get(key) is not None:
                lines.append(f"| {key} | {_value(entry[key])} |")
        for group in ("model", "data"):
            for key, value in (entry.get(group) or {}).items():
                lines.append(f"| {group}.{key} | {_value(value)} |")
        for key, value in (entry.get("metrics") or {}).items():
            lines.append(f"| {key} | {_value(value)} |")
        for folder, results in (entry.get("evaluation") or {}).items():
            for group, row in results.items():
                lines.append(f"| {folder}: {group} | " + ", ".join(f"{m} {_value(v)}" for m, v in row.items()) + " |")
        for key, value in (entry.get("quality") or {}).items():
            lines.append(f"| quality benchmark: {key} | {_value(value)} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", type=Path, nargs="+", help="folders to search for checkpoints (logs/, a quality benchmark's --out)")
    parser.add_argument("--out", type=Path, default=Path("CATALOGUE.md"), help="the Markdown file (a .json path writes JSON)")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        missing = [str(r) for r in args.roots if not r.is_dir()]
        if missing:
            raise UserFacingError(f"no folder {', '.join(missing)}")
        entries = [describe(path) for path in find_checkpoints(args.roots)]
        text = json.dumps(entries, indent=1) if args.out.suffix == ".json" else render(entries, args.roots)
        atomic_write_text(args.out, text + "\n")
    print(f"wrote {args.out}: {len(entries)} checkpoints")


if __name__ == "__main__":
    main()
