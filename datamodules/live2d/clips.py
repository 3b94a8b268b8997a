"""The clip format: one folder per clip, memory-mappable arrays plus a small JSON description.

    <root>/<character>/<clip>/frames.npy   T×S×S×4 uint8 RGBA, alpha premultiplied (np.load(mmap_mode="r"))
    <root>/<character>/<clip>/params.npy   T×P float32 raw standard parameters (PARAMETER_NAMES order)
    <root>/<character>/<clip>/clip.json    character, source, seed, fps, size, frames, parameter names, missing

Random access to any frame is a slice of a memory map (no decoding), which keeps loaders far ahead of training.
A clip folder is written under a temporary name and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from datamodules.parameters import PARAMETER_NAMES
from modules.errors import UserFacingError

FORMAT_VERSION = 1


class ClipError(UserFacingError):
    """A clip folder is incomplete, truncated or inconsistent."""


@dataclass(frozen=True)
class ClipInfo:
    """Description of one clip (the content of ``clip.json``, plus where it lies).

    ``source`` is ``random`` or ``replay`` (a trajectory from ``seed``) or ``motion`` (the model's authored motion
    ``motion`` = ``"Group:index"``; ``frames`` is then the motion's length).
    """

    character: str
    name: str
    source: str
    seed: int
    fps: float
    size: int
    frames: int
    parameter_names: tuple[str, ...]
    missing: tuple[str, ...]
    motion: str = ""
    path: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.path)


def write_clip(root: str | Path, info: ClipInfo, frames: np.ndarray, params: np.ndarray) -> Path:
    """Write a clip atomically to ``root/<character>/<name>`` and return that folder."""
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 4:
        raise ValueError(f"frames must be T×S×S×4 uint8, got {frames.dtype} {frames.shape}")
    if len(frames) != len(params) or len(frames) != info.frames:
        raise ValueError(f"clip {info.name}: {len(frames)} frames, {len(params)} parameter rows, info says {info.frames}")
    final = Path(root) / info.character / info.name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".tmp", dir=final.parent))
    try:
        np.save(staging / "frames.npy", frames)
        np.save(staging / "params.npy", params.astype(np.float32))
        description = {k: v for k, v in asdict(info).items() if k != "path"}
        (staging / "clip.json").write_text(json.dumps({"format": FORMAT_VERSION, **description}, indent=1))
        os.rename(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final


def read_clip(folder: str | Path) -> ClipInfo:
    """Read and check a clip folder: description, array shapes and lengths (arrays are only memory-mapped).

    Raises:
        ClipError: naming the file and what is wrong.
    """
    folder = Path(folder)
    description = folder / "clip.json"
    try:
        data = json.loads(description.read_text())
        info = ClipInfo(**{k: v for k, v in data.items() if k != "format"}, path=str(folder))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ClipError(f"{description}: missing or not a clip description ({exc})") from exc
    frames, params = open_arrays(folder)
    expected = (info.frames, info.size, info.size, 4)
    if frames.shape != expected or frames.dtype != np.uint8:
        raise ClipError(f"{folder / 'frames.npy'}: expected uint8 {expected}, found {frames.dtype} {frames.shape}")
    if params.shape != (info.frames, len(PARAMETER_NAMES)):
        raise ClipError(f"{folder / 'params.npy'}: expected {(info.frames, len(PARAMETER_NAMES))} (one row per frame), found {params.shape}")
    if tuple(info.parameter_names) != PARAMETER_NAMES:
        raise ClipError(f"{description}: parameter names differ from this version's standard parameters")
    return info


def open_arrays(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of ``frames.npy`` and ``params.npy``.

    Raises:
        ClipError: a file is missing or truncated.
    """
    arrays = []
    for name in ("frames.npy", "params.npy"):
        path = Path(folder) / name
        try:
            arrays.append(np.load(path, mmap_mode="r"))
        except (OSError, ValueError) as exc:
            raise ClipError(f"{path}: missing, truncated or not a .npy array ({exc})") from exc
    return arrays[0], arrays[1]


def index_clips(root: str | Path) -> tuple[list[ClipInfo], list[str]]:
    """All complete clips under ``root`` (sorted by character and name) and a line for each bad clip folder.

    Temporary folders of interrupted writes (names starting with a dot) are ignored.
    """
    clips, bad = [], []
    for folder in sorted(Path(root).glob("*/*/")):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            clips.append(read_clip(folder))
        except ClipError as exc:
            bad.append(str(exc))
    return clips, bad
