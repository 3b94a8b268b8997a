"""Where a run's files go: one folder per run, ``<save_dir>/<name>/<version>`` of its first logger.

Lightning's ``ModelCheckpoint`` puts ``checkpoints/`` there for every logger; the project's callbacks put the
resolved config, samples, memory and evaluation reports beside it (``Trainer.log_dir`` is the logger's
``save_dir`` itself for loggers other than TensorBoard's and CSV's, e.g. W&B's, where runs would overwrite each
other's files). ``latest`` beside the run folders points at the newest one.
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L

LATEST = "latest"


def run_folder(trainer: L.Trainer) -> Path:
    """The run's folder (``default_root_dir`` without a logger); a collective under DDP: every rank asks."""
    folder = None
    if trainer.is_global_zero:
        if trainer.loggers:
            logger = trainer.loggers[0]
            version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
            folder = os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name or ""), version)
        else:
            folder = trainer.default_root_dir
    return Path(trainer.strategy.broadcast(folder))


def point_latest(folder: Path) -> Path:
    """Make ``latest`` beside ``folder`` a relative link to it (replaced atomically); returns the link."""
    link = folder.parent / LATEST
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.parent / f".{LATEST}.{os.getpid()}.tmp"
    temporary.unlink(missing_ok=True)  # left by a killed process with this pid
    os.symlink(folder.name, temporary)
    os.replace(temporary, link)
    return link
