"""Checkpoints in commands: atomic saving (Lightning's checkpoint plugin), comparing a checkpoint's settings with the
ones asked for, and ``python -m lightning_app.checkpoints OLD NEW`` (:func:`~modules.animator_checkpoint.convert_checkpoint`).
The animator's own file format: :mod:`modules.animator_checkpoint`; reading files safely: :mod:`core.checkpoint_files`."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.errors import CheckpointError, exit_on_user_error
from core.files import atomic_open
from modules.animator_checkpoint import convert_checkpoint, load_animator


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpointing, written to a temporary file and renamed into place.

    A crash while saving leaves the previous checkpoint (e.g. ``last.ckpt``) intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` for a nested config; values normalised to JSON data (paths to strings, tuples to lists),
    and a ``class_path``'s ``init_args`` kept only under it (keys of one class are not compared with another's)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if hasattr(value, "as_dict"):  # a jsonargparse Namespace
            value = value.as_dict()
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}."))
        else:
            flat[name] = json.loads(json.dumps(value, default=str))
    return flat


def hyperparameter_differences(checkpoint: Mapping[str, Any], requested: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Settings the user asked for that the checkpoint's hyper-parameters contradict: ``{key: (checkpoint value,
    requested value)}`` over keys both have, where the request is not the default (a default the checkpoint
    differs from is the checkpoint's to set). Keys under a ``class_path`` that itself differs are left out."""
    stored, asked, default = flatten_config(checkpoint), flatten_config(requested), flatten_config(defaults)
    differing = {}
    for key in sorted(stored.keys() & asked.keys()):
        if stored[key] != asked[key] and asked[key] != default.get(key, object()):
            differing[key] = (stored[key], asked[key])
    classes = [key[: -len("class_path")] for key in differing if key.endswith("class_path")]
    return {key: values for key, values in differing.items() if not any(key.startswith(c) and not key.endswith("class_path") for c in classes)}


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Convert an animator checkpoint with a pickled adapter (older versions) into "
                                     "one that loads with weights_only=True. Unpickling runs the file's code: only for trusted files.")
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.new.resolve() == args.old.resolve():
            raise CheckpointError("give the converted checkpoint another name than the old one")
        convert_checkpoint(args.old, args.new)
        load_animator(args.new)
    print(f"wrote {args.new}")


if __name__ == "__main__":
    main()
