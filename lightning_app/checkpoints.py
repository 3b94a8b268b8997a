"""Checkpoint files: atomic saving, and checks that turn a bad file into a clear error before torch reads it."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_app.files import atomic_open
from modules.errors import CheckpointError

if TYPE_CHECKING:
    from modules.animator_module import AnimatorModule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpointing, written to a temporary file and renamed into place.

    A crash while saving leaves the previous checkpoint (e.g. ``last.ckpt``) intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)


def verify_checkpoint(path: str | Path) -> Path:
    """Check that ``path`` is a complete, uncorrupted torch checkpoint archive without unpickling it.

    Reads the zip directory and the CRC of every member, so a truncated or bit-flipped file is caught.

    Raises:
        CheckpointError: naming the file and what is wrong with it.
    """
    file = Path(path).expanduser()
    if not file.exists():
        raise CheckpointError(f"checkpoint {str(file)!r} does not exist")
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(file)!r} is not a file")
    if file.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {str(file)!r} is empty (0 bytes)")
    if not zipfile.is_zipfile(file):
        raise CheckpointError(
            f"checkpoint {str(file)!r} is truncated or not a torch checkpoint (no complete zip archive; "
            f"{file.stat().st_size} bytes) — was it copied or written only in part?"
        )
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CheckpointError(f"checkpoint {str(file)!r} is corrupt: {exc}") from exc
    if bad is not None:
        raise CheckpointError(f"checkpoint {str(file)!r} is corrupt: member {bad!r} fails its CRC check")
    if not any(name.endswith("/data.pkl") or name == "data.pkl" for name in names):
        raise CheckpointError(f"checkpoint {str(file)!r} is a zip archive but not a torch checkpoint (no data.pkl)")
    return file


def load_plain_checkpoint(path: str | Path, role: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint written by ``cli.py fit``, read with ``weights_only=True`` so that nothing in it is executed.

    Raises:
        CheckpointError: naming ``role`` (the option it came from), when the file holds pickled objects (e.g. written
            by :func:`save_animator`) or is not readable.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, ... for files it will not read as data
        raise CheckpointError(f"{role} {str(path)!r} holds more than plain data ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:120]}); give one written by cli.py fit") from exc


def read_hyperparameters(path: str | Path) -> dict[str, Any]:
    """The ``hyper_parameters`` a CLI run stored in its checkpoint (plain data: ``class_path``/``init_args``);
    ``{}`` when it has none. Raises :class:`CheckpointError` as :func:`load_plain_checkpoint`."""
    hparams = dict(load_plain_checkpoint(path).get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    return hparams


CHECKPOINT_KINDS = {"animator": "descriptor", "evaluator": "encoder"}
"""Each kind of checkpoint this project writes, by a hyper-parameter only that kind has."""


def checkpoint_kind(hparams: Mapping[str, Any]) -> str | None:
    """``"animator"``, ``"evaluator"`` or ``None`` (neither) for a checkpoint's hyper-parameters."""
    return next((kind for kind, key in CHECKPOINT_KINDS.items() if key in hparams), None)


def expect_checkpoint_kind(path: str | Path, expected: str, role: str) -> None:
    """Stop early when ``path`` (checked, given as ``role``, e.g. ``"--checkpoint"``) is another kind of checkpoint
    than ``expected``; files that are not plain data (older formats) are left for the loader to judge.

    Raises:
        CheckpointError: naming both kinds.
    """
    verify_checkpoint(path)
    try:
        kind = checkpoint_kind(read_hyperparameters(path))
    except CheckpointError:
        return
    if kind is not None and kind != expected:
        raise CheckpointError(f"{role} {str(path)!r} is an {kind} checkpoint; an {expected} checkpoint is needed here")


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


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The most recently written ``last*.ckpt`` below ``root`` (a logger's root folder), or ``None``."""
    candidates = [p for p in Path(root).glob("**/checkpoints/last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)


def load_animator(path: str | Path) -> AnimatorModule:
    """A trained AnimatorModule from its checkpoint, on the CPU.

    Raises:
        CheckpointError: the file is damaged, it is not an AnimatorModule checkpoint (e.g. an evaluator's), or its
            weights are not finite.
    """
    from modules.animator_module import AnimatorModule

    expect_checkpoint_kind(path, "animator", "checkpoint")
    try:
        return AnimatorModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)  # hparams hold the descriptor objects
    except CheckpointError as exc:
        raise CheckpointError(f"{str(path)!r}: {exc}") from exc
    except (KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not an AnimatorModule checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc


def save_animator(module: AnimatorModule, path: str | Path) -> None:
    """Write ``module`` (including its current adapter) as a checkpoint that :func:`load_animator` and Lightning's
    ``load_from_checkpoint`` read back; atomically."""
    import lightning

    module.hparams["adapter"] = module.adapter
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams), "pytorch-lightning_version": lightning.__version__}
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)
