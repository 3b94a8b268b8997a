"""The clip format: one folder per clip, memory-mappable arrays plus a small JSON description.

    <root>/<character>/<clip>/frames.npy   T×S×S×4 uint8 RGBA, alpha premultiplied (np.load(mmap_mode="r"))
    <root>/<character>/<clip>/params.npy   T×P float32 raw standard parameters (PARAMETER_NAMES order)
    <root>/<character>/<clip>/regions.npy  T×S×S uint8 region map (puppet.REGIONS indices)   } rendered clips
    <root>/<character>/<clip>/keypoints.npy T×K×2 float32 pixels (puppet.KEYPOINT_NAMES)    } only
    <root>/<character>/<clip>/clip.json    character, source, seed, fps, size, frames, parameter names, missing,
                                           ground_truth (which of regions/keypoints the clip has)

Random access to any frame is a slice of a memory map (no decoding), which keeps loaders far ahead of training.
A clip folder is written under a temporary name and renamed into place, so it is complete or absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core.errors import UserFacingError
from core.vocabulary import KEYPOINT_NAMES, PARAMETER_NAMES

FORMAT_VERSION = 2
GROUND_TRUTH = ("regions", "keypoints")


class ClipError(UserFacingError):
    """A clip folder is incomplete, truncated or inconsistent."""


@dataclass(frozen=True)
class ClipInfo:
    """Description of one clip (the content of ``clip.json``, plus where it lies).

    ``source`` is ``random`` or ``replay`` (a trajectory from ``seed``) or ``motion`` (the model's authored motion
    ``motion`` = ``"Group:index"``; ``frames`` is then the motion's length) or ``video`` (imported footage) or
    ``human`` (the parameters read from a human video's faces, :mod:`datamodules.adapter_pairs`).
    ``ground_truth`` lists the per-frame arrays beside frames and parameters (from :data:`GROUND_TRUTH`).
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
    ground_truth: tuple[str, ...] = ()
    path: str = ""

    @property
    def folder(self) -> Path:
        return Path(self.path)


def _expected_shapes(info: ClipInfo) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    shapes = {
        "frames": ((info.frames, info.size, info.size, 4), np.dtype(np.uint8)),
        "params": ((info.frames, len(PARAMETER_NAMES)), np.dtype(np.float32)),
        "regions": ((info.frames, info.size, info.size), np.dtype(np.uint8)),
        "keypoints": ((info.frames, len(KEYPOINT_NAMES), 2), np.dtype(np.float32)),
    }
    return {name: shapes[name] for name in ("frames", "params", *info.ground_truth)}


SAFE_NAME = re.compile(r"[^\W][\w.\- ]*")
"""A character or clip name: one folder name, starting with a letter, digit or ``_`` (no separators, no ``..``)."""


def check_name(value: str, what: str) -> str:
    """``value`` if it is a :data:`SAFE_NAME`, else :class:`ClipError` naming ``what`` — a name never leaves its folder."""
    if not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ClipError(f"{what} {value!r} is not a folder name: use letters, digits, '_', '-', '.' and spaces, starting with a letter or digit")
    return value


def write_clip(root: str | Path, info: ClipInfo, arrays: dict[str, np.ndarray]) -> Path:
    """Write a clip atomically to ``root/<character>/<name>`` and return that folder.

    Args:
        root: dataset folder.
        info: the clip's description; ``info.ground_truth`` names the ground-truth arrays to expect.
        arrays: ``frames``, ``params`` and each ground-truth array, shaped as in the module docstring.

    Raises:
        ClipError: the character or clip name is not a plain folder name (:func:`check_name`).
    """
    check_name(info.character, "character")
    check_name(info.name, "clip name")
    for name, (shape, dtype) in _expected_shapes(info).items():
        if name not in arrays or arrays[name].shape != shape:
            found = arrays[name].shape if name in arrays else "nothing"
            raise ValueError(f"clip {info.character}/{info.name}: {name} must be {dtype} {shape}, got {found}")
    final = Path(root) / info.character / info.name
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".tmp", dir=final.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # as mkdir would make it (mkdtemp: 0o700, unreadable to anyone else)
        for name, (_, dtype) in _expected_shapes(info).items():
            np.save(staging / f"{name}.npy", arrays[name].astype(dtype, copy=False))
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
        info = ClipInfo(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k != "format"}, path=str(folder))
    except (OSError, json.JSONDecodeError, TypeError) as exc:
        raise ClipError(f"{description}: missing or not a clip description ({exc})") from exc
    if tuple(info.parameter_names) != PARAMETER_NAMES:
        raise ClipError(f"{description}: parameter names differ from this version's standard parameters")
    unknown = set(info.ground_truth) - set(GROUND_TRUTH)
    if unknown:
        raise ClipError(f"{description}: unknown ground truth {sorted(unknown)}; expected some of {GROUND_TRUTH}")
    arrays = open_arrays(info)
    for name, (shape, dtype) in _expected_shapes(info).items():
        if arrays[name].shape != shape or arrays[name].dtype != dtype:
            raise ClipError(f"{folder / (name + '.npy')}: expected {dtype} {shape} (one entry per frame), found {arrays[name].dtype} {arrays[name].shape}")
    return info


def open_arrays(info: ClipInfo) -> dict[str, np.ndarray]:
    """Memory maps of the clip's arrays: ``frames``, ``params`` and its ground truth.

    Raises:
        ClipError: a file is missing or truncated.
    """
    arrays = {}
    for name in ("frames", "params", *info.ground_truth):
        path = info.folder / f"{name}.npy"
        try:
            arrays[name] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ClipError(f"{path}: missing, truncated or not a .npy array ({exc})") from exc
    return arrays


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
