"""Quiet by default: messages of the libraries we run that say nothing about this run, filtered where they are made.

Measured on a ``fit`` of the puppet on CPU: Lightning's accelerator lines ("GPU available: False …", "TPU
available: False …"), its advertisement ("💡 Tip: …"), "Seed set to 0", and two deprecation warnings raised inside
Lightning and torchdata by the pinned torch (``isinstance(treespec, LeafSpec)``, ``set_vital``) that no setting of
ours can change. Everything else — the project's own messages, Lightning's other warnings — is shown. ``--verbose``
(``cli.py``) shows these too; rendering workers are quiet by their own switch
(:func:`~datamodules.live2d.render_process.render_pool`).
"""

from __future__ import annotations

import logging
import warnings

HARMLESS_LOG_LINES = ("GPU available: False", "TPU available: False", "HPU available: False", "💡 Tip:", "Seed set to")
"""Starts of the log lines left out."""
HARMLESS_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"'set_vital' is deprecated")
"""Regular expressions of the warnings left out (matched at the start of the message)."""
LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero", "lightning.fabric.utilities.seed")
"""The loggers that make those lines."""


class _HarmlessLines(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(HARMLESS_LOG_LINES)


_FILTER = _HarmlessLines()


def quiet_libraries() -> None:
    """Leave out the messages above for the rest of the process (calling it again changes nothing)."""
    for pattern in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
