"""The animator's checkpoint file: :func:`save_animator` writes an :class:`~modules.animator_module.AnimatorModule`
(its descriptor, backbone and adapter as ``class_path``/``init_args``) so that :func:`load_animator` rebuilds it
from a ``torch.load(weights_only=True)`` read — loading runs no code from the file. :func:`convert_checkpoint`
rewrites a checkpoint of an older version, whose adapter was pickled. Reading files safely:
:mod:`core.checkpoint_files`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning
import torch
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters_context

from core.checkpoint_files import check_kind, load_plain_checkpoint, verify_checkpoint
from core.errors import CheckpointError
from core.files import atomic_open
from modules.animator_module import AnimatorModule


def plain_data(value: Any, key: str = "hyper_parameters") -> str | None:
    """The key of the first value in ``value`` that is not plain data (what ``weights_only`` loading refuses: a
    module, a class, any other object), or ``None`` when all of it is."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return None
    if isinstance(value, Mapping):
        return next((bad for k, v in value.items() if (bad := plain_data(v, f"{key}.{k}"))), None)
    if isinstance(value, (list, tuple)):
        return next((bad for i, v in enumerate(value) if (bad := plain_data(v, f"{key}[{i}]"))), None)
    return f"{key} ({type(value).__name__})"


def load_animator(path: str | Path) -> AnimatorModule:
    """A trained AnimatorModule from its checkpoint, on the CPU, read with ``weights_only=True`` (nothing in the file
    runs): the descriptor, backbone and adapter are rebuilt from their ``class_path``/``init_args``.

    Raises:
        CheckpointError: the file is damaged, it is not an AnimatorModule checkpoint (e.g. an evaluator's), it holds
            pickled objects (an adapter checkpoint of an older version: the message says how to convert it), or its
            weights are not finite.
    """
    verify_checkpoint(path)
    try:
        hparams = dict(load_plain_checkpoint(path).get("hyper_parameters") or {})
    except CheckpointError as exc:
        raise CheckpointError(f"{str(path)!r} holds pickled objects (an animator with an adapter saved by an older version?); "
                              f"convert it once, if you trust the file: python -m lightning_app.checkpoints {path} NEW.ckpt") from exc
    check_kind(hparams, path, "animator", "checkpoint")
    instantiator = hparams.pop("_instantiator", None)
    if instantiator is None:
        raise CheckpointError(f"{str(path)!r} is not an AnimatorModule checkpoint of cli.py fit or save_animator (no class_path/init_args to rebuild it from)")
    try:
        # The loaded module keeps the file's plain hyper-parameters (not the objects built from them), as a module built
        # by cli.py does, so that save_animator can write it back as plain data: Lightning's CLI uses this context too.
        with _given_hyperparameters_context(hparams=hparams, instantiator=instantiator):
            return AnimatorModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    except CheckpointError as exc:
        raise CheckpointError(f"{str(path)!r}: {exc}") from exc
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{str(path)!r} is not an AnimatorModule checkpoint ({type(exc).__name__}: {str(exc)[:200]})") from exc


def save_animator(module: AnimatorModule, path: str | Path) -> None:
    """Write ``module`` (including its current adapter, as ``class_path``/``init_args``) as a checkpoint that
    :func:`load_animator` and Lightning's ``load_from_checkpoint`` read back with ``weights_only=True``; atomically.

    Raises:
        CheckpointError: the module's hyper-parameters hold objects (a module built in code, not by ``cli.py``).
    """
    hparams = {**module.hparams, "adapter": module.adapter.config() if module.adapter is not None else None}
    bad = plain_data({k: v for k, v in hparams.items() if k != "_instantiator"})
    if bad or "_instantiator" not in hparams:
        raise CheckpointError(f"cannot save this animator as plain data: {bad or 'it was not built from a config'}; "
                              "build it with cli.py (or load_animator) so that its parts are class_path/init_args")
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": hparams, "pytorch-lightning_version": lightning.__version__}
    with atomic_open(path, "wb") as handle:
        torch.save(checkpoint, handle)


def convert_checkpoint(old: str | Path, new: str | Path) -> None:
    """Rewrite an animator checkpoint whose adapter was pickled (``save_animator`` before checkpoints were plain data)
    with the adapter as ``class_path``/``init_args``. Unpickling ``old`` runs the code it holds: only for trusted files.

    Raises:
        CheckpointError: ``old`` is damaged or holds other objects than an adapter.
    """
    verify_checkpoint(old)
    checkpoint = torch.load(old, map_location="cpu", weights_only=False)
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    adapter = hparams.get("adapter")
    if isinstance(adapter, torch.nn.Module):
        if not hasattr(adapter, "config"):
            raise CheckpointError(f"{str(old)!r}: its adapter is a {type(adapter).__name__}, which has no plain-data form")
        hparams["adapter"] = adapter.config()
    bad = plain_data({k: v for k, v in hparams.items() if k != "_instantiator"})
    if bad:
        raise CheckpointError(f"{str(old)!r}: {bad} is not plain data and has no converter; retrain with cli.py fit")
    checkpoint["hyper_parameters"] = hparams
    with atomic_open(new, "wb") as handle:
        torch.save(checkpoint, handle)
