"""Rendering Live2D characters in worker processes started with ``spawn``.

A rendering process owns its GL context; contexts must not cross a ``fork`` and a crash inside the Cubism core
ends only the worker. :func:`render_poses` runs in the worker; :func:`render_in_subprocess` calls it from any
process (a test, a DataLoader's parent, a command) and turns a dead worker into a clear error. Every pool comes
from :func:`render_pool`, whose workers end when the process that started them is gone (even by SIGKILL).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from core.errors import UserFacingError
from datamodules.live2d.clips import ClipInfo, GROUND_TRUTH, write_clip
from datamodules.live2d.trajectories import random_trajectory


PARENT_CHECK_SECONDS = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Worker initializer: exit once the process that started this worker is gone. A parent killed with SIGKILL
    runs no clean-up, and its workers would otherwise wait on their task pipe forever; a daemon thread compares
    the parent's pid every :data:`PARENT_CHECK_SECONDS`."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _start_worker(parent_pid: int, quiet: bool) -> None:
    """Worker initializer: :func:`_die_with_parent`; ``quiet`` sends the worker's standard output (file
    descriptor 1, where live2d-py's banner and the Cubism core's per-model log lines go — 13 lines for one Cubism 2
    character, from native code that no Python setting reaches) to ``/dev/null``. Errors still come back: a worker's
    exceptions travel to the parent, and standard error is kept."""
    _die_with_parent(parent_pid)
    if quiet:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)


def render_pool(workers: int, quiet: bool = True) -> ProcessPoolExecutor:
    """A pool of ``workers`` (at least 1) ``spawn`` processes that die with this one, quiet unless ``quiet`` is off
    (see :func:`_start_worker`)."""
    return ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(os.getpid(), quiet))


@dataclass(frozen=True)
class RenderedPoses:
    """Frames of one character with their ground truth.

    Attributes:
        frames: ``N×S×S×4`` uint8 RGBA (alpha premultiplied), one per pose.
        regions: ``N×S×S`` uint8 region maps (indices into :data:`~core.vocabulary.REGIONS`); ``None`` for a
            model without ground truth.
        keypoints: ``N×K×2`` float32 pixel coordinates (:data:`~core.vocabulary.KEYPOINT_NAMES` order);
            ``None`` for a model without ground truth.
        bindings: standard parameter → the model's parameter ID that it drives.
        missing: standard parameters the model lacks.
        crop: head crop (centre x, centre y, half side) in the full view's normalised device coordinates.
        ground_truth_problem: why the model has no region maps and keypoints (``None`` when it has them).
    """

    frames: np.ndarray
    regions: np.ndarray | None
    keypoints: np.ndarray | None
    bindings: dict[str, str]
    missing: list[str]
    crop: tuple[float, float, float]
    ground_truth_problem: str | None = None


_characters: dict[tuple, object] = {}  # this worker's loaded characters


def _character(model_json: str, size: int, physics: bool, motions: bool = False, region_overrides: dict[str, str] | None = None):
    """The worker's character for these settings, loaded on first use (imports live2d: workers only)."""
    from datamodules.live2d.character import Live2DCharacter

    key = (model_json, size, physics, motions, tuple(sorted((region_overrides or {}).items())))
    if key not in _characters:
        _characters[key] = Live2DCharacter(model_json, size=size, physics=physics, motions=motions, region_overrides=region_overrides)
    return _characters[key]


def _stack(frames: list, character) -> RenderedPoses:
    truth = character.ground_truth_problem is None
    return RenderedPoses(
        np.stack([f.image for f in frames]), np.stack([f.regions for f in frames]) if truth else None,
        np.stack([f.keypoints for f in frames]) if truth else None,
        {k: b.model_id for k, b in character.bindings.items()}, character.missing, character.crop, character.ground_truth_problem,
    )


def render_poses(model_json: str, poses: np.ndarray, size: int, physics: bool = False, region_overrides: dict[str, str] | None = None) -> RenderedPoses:
    """Render ``poses`` (``N×P`` raw standard parameters) of one character; runs inside the worker process."""
    character = _character(model_json, size, physics, region_overrides=region_overrides)
    return _stack([character.render(pose) for pose in np.asarray(poses, np.float32)], character)


def render_clip(model_json: str, root: str, info: ClipInfo, physics: bool, region_overrides: dict[str, str] | None = None,
                params: np.ndarray | None = None) -> tuple[str, str | None]:
    """Render the clip described by ``info`` with its ground truth and write it atomically; runs in the worker.

    The poses are ``params`` (``T×P`` raw standard parameters) when given, else the authored motion (at most
    ``info.frames`` frames) or the random trajectory of ``info.seed``.

    Returns:
        The clip's name and why it has no region maps and keypoints (``None`` when it has them).
    """
    if info.source == "motion":
        character = _character(model_json, info.size, physics=True, motions=True, region_overrides=region_overrides)  # loaded as published
        frames, params = character.render_motion(info.motion, info.fps, info.frames)
        rendered = _stack(frames, character)
    else:
        params = random_trajectory(info.seed, info.frames, info.fps) if params is None else np.asarray(params, np.float32)
        rendered = render_poses(model_json, params, info.size, physics, region_overrides)
    truth = GROUND_TRUTH if rendered.ground_truth_problem is None else ()
    info = replace(info, frames=len(params), missing=tuple(rendered.missing), ground_truth=truth)
    arrays = {"frames": rendered.frames, "params": params}
    if truth:
        arrays.update(regions=rendered.regions, keypoints=rendered.keypoints)
    write_clip(root, info, arrays)
    return info.name, rendered.ground_truth_problem


def render_in_subprocess(model_json: str | Path, poses: np.ndarray, size: int, physics: bool = False,
                         region_overrides: dict[str, str] | None = None) -> RenderedPoses:
    """:func:`render_poses` in a fresh ``spawn`` process.

    Raises:
        UserFacingError: the model's own errors as raised in the worker, or the worker dying (the Cubism core
            ends the process on some malformed inputs), naming the model.
    """
    with render_pool(1) as pool:
        try:
            return pool.submit(render_poses, str(model_json), poses, size, physics, region_overrides).result()
        except BrokenProcessPool as exc:
            raise UserFacingError(f"the rendering process died while rendering {str(model_json)!r} (a malformed model?)") from exc
