"""Reading checkpoint files safely: checks that turn a bad file into a clear error before torch unpickles it, reading
as plain data, telling the project's kinds of checkpoint apart, and finding a run's newest ``last.ckpt``."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from core.errors import CheckpointError


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
            by ``lightning_app.checkpoints.save_animator``) or is not readable.
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


CHECKPOINT_KINDS = {"animator": "descriptor", "evaluator": "encoder", "adapter training": "animator"}
"""Each kind of checkpoint this project writes, by a hyper-parameter only that kind has."""
KIND_HINTS = {"adapter training": " (the animator with the trained adapter is animator.ckpt in that run's folder)"}
"""What to give instead of a kind of checkpoint that is often given by mistake."""


def checkpoint_kind(hparams: Mapping[str, Any]) -> str | None:
    """A key of :data:`CHECKPOINT_KINDS` or ``None`` (none of them) for a checkpoint's hyper-parameters."""
    return next((kind for kind, key in CHECKPOINT_KINDS.items() if key in hparams), None)


def expect_checkpoint_kind(path: str | Path, expected: str, role: str) -> None:
    """Stop early when ``path`` (checked, given as ``role``, e.g. ``"--checkpoint"``) is another kind of checkpoint
    than ``expected``; files that are not plain data (older formats) are left for the loader to judge.

    Raises:
        CheckpointError: naming both kinds.
    """
    verify_checkpoint(path)
    try:
        hparams = read_hyperparameters(path)
    except CheckpointError:
        return
    check_kind(hparams, path, expected, role)


def check_kind(hparams: Mapping[str, Any], path: str | Path, expected: str, role: str) -> None:
    """:func:`expect_checkpoint_kind` for hyper-parameters already read from ``path``."""
    kind = checkpoint_kind(hparams)
    if kind is not None and kind != expected:
        raise CheckpointError(f"{role} {str(path)!r} is an {kind} checkpoint; an {expected} checkpoint is needed here{KIND_HINTS.get(kind, '')}")


def find_last_checkpoint(root: str | Path) -> Path | None:
    """The most recently written ``last*.ckpt`` below ``root`` (a logger's root folder), or ``None``."""
    candidates = [p for p in Path(root).glob("**/checkpoints/last*.ckpt") if p.is_file()]
    return max(candidates, key=lambda p: p.stat().st_mtime, default=None)
