"""``RandomState``: the random generators' state in every checkpoint, so that a resumed run draws what the
uninterrupted run would have drawn."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


class RandomState(Callback):
    """Save the global generators of torch (CPU, and CUDA where initialised), NumPy and Python with each checkpoint
    and restore them when training resumes, in ``on_train_start`` (after the sanity check, which draws too).

    With the training loader's own position (a ``StatefulDataLoader``, see :class:`~datamodules.PairDataModule`)
    this makes a resumed run — with ``--trainer.deterministic=true`` — end with the weights of an uninterrupted one:
    augmentation, equivariance warps and any other draw continue where they stopped. The state is this process's;
    on several processes (DDP) every rank resumes with rank 0's generators, not bit-identical to the uninterrupted
    run.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers and tuples only: checkpoints stay loadable with ``weights_only=True``."""
        kind, keys, position, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached),
                 "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        kind, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
        random.setstate(state["python"])
        if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
