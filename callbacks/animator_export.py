"""``AnimatorExport``: at the end of ``fit``, the trained animator with its new adapter, for ``lightning_app.animate``."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from core.run_folder import run_folder
from modules.animator_checkpoint import save_animator


class AnimatorExport(L.Callback):
    """Write ``pl_module.animator_with_adapter()`` (:class:`~modules.adapter_module.AdapterModule`) into the run
    folder as an animator checkpoint (:func:`~modules.animator_checkpoint.save_animator`: plain data, atomic) when
    ``fit`` ends — also after a run stopped early, never after one that failed.

    Args:
        filename: the checkpoint's name in the run folder.
    """

    def __init__(self, filename: str = "animator.ckpt") -> None:
        if not filename or Path(filename).name != filename:
            raise ValueError(f"AnimatorExport: filename must be a plain file name, got {filename!r}")
        self.filename = filename
        self.path: Path | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = run_folder(trainer) / self.filename
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_animator(pl_module.animator_with_adapter(), path)
            rank_zero_info(f"animator with the adapter: {path}")
        self.path = path
