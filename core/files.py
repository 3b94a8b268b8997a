"""Atomic file writes: a file appears complete under its final name or not at all, with the permissions an ordinary
``open`` would give it (``0o666`` less the process umask; ``mkstemp`` alone makes every file ``0o600``)."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator

import cv2
import numpy as np

from core.errors import UserFacingError


def umask_mode(base: int = 0o666) -> int:
    """``base`` less the process umask: the mode ``open`` (``0o666``) or ``mkdir`` (``0o777``) would create."""
    umask = os.umask(0)
    os.umask(umask)
    return base & ~umask


def check_folder_path(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a folder that exists or can be made: raises :class:`UserFacingError` naming ``what`` (the option)
    when it, or a parent of it, is a file."""
    folder = Path(path).expanduser()
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            if not candidate.is_dir():
                problem = "is a file" if candidate == folder else f"lies under {str(candidate)!r}, which is a file"
                raise UserFacingError(f"{what} {str(folder)!r} {problem}, not a folder")
            break
    return folder


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success it is flushed, synced and renamed onto ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, umask_mode())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` with the same suffix, for writers that take a file name (video
    writers); renamed onto ``path`` when the block ends without an exception, removed otherwise."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.fchmod(fd, umask_mode())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB ``H×W×3`` uint8 image to ``path`` as PNG, atomically."""
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode {str(path)!r} as PNG")
    atomic_write_bytes(path, png.tobytes())


@contextmanager
def atomic_video(path: str | os.PathLike, fps: float, width: int, height: int) -> Iterator[Callable[[np.ndarray], None]]:
    """An mp4 (``mp4v``) written frame by frame: the block gets a function taking RGB ``height×width×3`` uint8
    frames; the video appears under ``path`` when the block ends without an exception (nothing otherwise).

    Raises:
        UserFacingError: OpenCV cannot open a writer for ``path``.
    """
    with atomic_path(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not writer.isOpened():
            raise UserFacingError(f"OpenCV cannot write {str(path)!r} (mp4v codec)")
        try:
            yield lambda rgb: writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
