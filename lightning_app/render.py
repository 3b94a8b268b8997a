"""Render Live2D training clips: ``python -m lightning_app.render --models ../shared/live2d --out data/live2d``.

For every model folder ``<models>/<Name>/`` (Cubism 3/4 ``*.model3.json`` or Cubism 2 ``*.model.json``) it renders ``--clips`` clips along random smooth trajectories
of the standard face parameters, ``--replays`` trajectories shared by all characters (the same motion on
every character: cross-identity ground truth) and, with ``--motions``, the model's own authored motions. Clips
are head crops of ``--size`` pixels with per-frame region maps and keypoints, written atomically in the format of
:mod:`datamodules.live2d.clips`; finished clips are skipped, so an interrupted run resumes. Work is
spread over ``--workers`` spawned processes (each owns its GL context) with a progress bar.

Models are isolated: one whose files fail the checks (made in this process, before any worker loads it), whose
loading raises, or that kills its worker is reported with the reason, its clips are skipped and the others still
render (a dead worker's pool is replaced). ``index.json`` lists the clips written, each character's ground truth
(or why it has none) and the failed models with their attempts; a rerun retries a failed model once more and then
leaves it out until ``--retry-failed``. Each character's neutral frame is written as ``<Name>/portrait.png`` (over
white), a portrait for ``animate --portrait``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zlib
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
from rich.progress import Progress

from core.errors import UserFacingError, exit_on_user_error
from core.files import atomic_write_png, atomic_write_text, check_folder_path
from core.frames import composite
from core.vocabulary import PARAMETER_NAMES
from datamodules.live2d.clips import ClipInfo, index_clips, open_arrays
from datamodules.live2d.model_files import Live2DModelError, find_models, read_model_files
from datamodules.live2d.regions import KINDS, check_overrides
from datamodules.live2d.render_process import render_clip, render_pool

REPLAY_SEED_BASE = 1_000_000
MAX_ATTEMPTS = 2  # a model that failed this often is left out of reruns unless --retry-failed
PORTRAIT_FILE = "portrait.png"


def read_region_overrides(path: Path) -> dict[str, dict[str, str]]:
    """Per-model region overrides from a JSON file ``{Name: {part or drawable ID: kind}}``, checked."""
    try:
        overrides = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UserFacingError(f"--region-overrides {str(path)!r}: not a readable JSON file ({exc})") from exc
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise UserFacingError(f"--region-overrides {str(path)!r}: expected {{\"Name\": {{\"PartId\": \"kind\"}}}}")
    for name, table in overrides.items():
        try:
            check_overrides(table, f"{path} [{name}]")
        except ValueError as exc:
            raise UserFacingError(str(exc)) from exc
    return overrides


def authored_motions(model_json: Path) -> list[str]:
    """``"Group:index"`` for every usable motion of a setting file of either generation; none where a motion
    file is damaged (loading the model with its motions would hand it to the native core), with a warning."""
    files = read_model_files(model_json)
    try:
        files.check_motions_loadable()
    except Live2DModelError as exc:
        print(f"warning: no authored-motion clips for {files.name}: {exc}", file=sys.stderr)
        return []
    for motion, problem in files.motion_problems.items():
        print(f"warning: {files.name} motion {motion} skipped: {problem}", file=sys.stderr)
    return list(files.motions)


def plan_clips(characters: dict[str, Path], clips: int, replays: int, frames: int, fps: float, size: int, seed: int,
               motions: bool = False) -> list[ClipInfo]:
    """Every clip to render: per character ``clips`` own random trajectories, ``replays`` shared ones and, with
    ``motions``, each authored motion (at most ``frames`` frames)."""
    plan = []
    for character, model_json in characters.items():
        if motions:
            for motion in authored_motions(model_json):
                name = "motion_" + re.sub(r"[^\w.\- ]", "_", motion)  # a folder name (clips.check_name)
                plan.append(ClipInfo(character, name, "motion", 0, fps, size, frames, PARAMETER_NAMES, (), motion=motion))
        own = zlib.crc32(character.encode()) * 1000 + seed * 100_000_000
        for i in range(clips):
            plan.append(ClipInfo(character, f"random_{i:03d}", "random", own + i, fps, size, frames, PARAMETER_NAMES, ()))
        for r in range(replays):
            plan.append(ClipInfo(character, f"replay_{r:03d}", "replay", REPLAY_SEED_BASE + seed * 1000 + r, fps, size, frames, PARAMETER_NAMES, ()))
    return plan


def _read_index(out: Path) -> dict:
    try:
        return json.loads((out / "index.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def render_dataset(models: Path, out: Path, size: int = 256, clips: int = 4, replays: int = 2, frames: int = 60, fps: float = 30.0,
                   workers: int = 2, seed: int = 0, physics: bool = False, characters: list[str] | None = None,
                   motions: bool = False, region_overrides: dict[str, dict[str, str]] | None = None, retry_failed: bool = False,
                   verbose: bool = False) -> int:
    """Render what is missing under ``out``, then write ``out/index.json``; returns the number of clips rendered.

    Failed models are reported on stderr and recorded in ``index.json``; the others still render. The workers'
    native banners and log lines are shown only when ``verbose``.
    """
    for name, value, least in (("size", size, 16), ("clips", clips, 0), ("replays", replays, 0), ("frames", frames, 1), ("workers", workers, 1)):
        if value < least:
            raise UserFacingError(f"--{name} must be at least {least}, got {value}")
    if fps <= 0:
        raise UserFacingError(f"--fps must be positive, got {fps}")
    check_folder_path(out, "--out")
    found = find_models(models, characters)
    previous = _read_index(out)
    before = previous.get("failed", {})
    failed: dict[str, dict] = {n: e for n, e in before.items() if n in found and e.get("attempts", 0) >= MAX_ATTEMPTS and not retry_failed}
    for name, entry in failed.items():
        print(f"warning: {name} left out: failed {entry['attempts']} times ({entry['error']}); --retry-failed tries again", file=sys.stderr)
    left_out = set(failed)
    for name, path in found.items():
        if name in failed:
            continue
        try:
            read_model_files(path)
        except Live2DModelError as exc:
            failed[name] = {"error": str(exc)}
    renderable = {n: p for n, p in found.items() if n not in failed}
    plan = [c for c in plan_clips(renderable, clips, replays, frames, fps, size, seed, motions) if not (out / c.character / c.name / "clip.json").is_file()]
    problems: dict[str, str | None] = dict(previous.get("ground_truth_problems", {}))
    jobs = {"renderable": renderable, "out": out, "physics": physics, "overrides": region_overrides or {}, "failed": failed, "problems": problems,
            "verbose": verbose}
    with Progress() as progress:
        bar = progress.add_task(f"rendering {len(plan)} clips", total=len(plan))
        left = _render_clips(plan, workers, progress, bar, **jobs)
        for character in dict.fromkeys(c.character for c in left):
            # the pool died: a model killed its worker. Each character's unfinished clips get a process of their own.
            if _render_clips([c for c in left if c.character == character], 1, progress, bar, **jobs):
                failed[character] = {"error": f"the rendering process died on {character} ({renderable[character]}): a malformed model?"}
    rendered = sum(1 for c in plan if (out / c.character / c.name / "clip.json").is_file())
    for name in set(failed) - left_out:
        failed[name]["attempts"] = before.get(name, {}).get("attempts", 0) + 1
        print(f"error: {name} not rendered: {failed[name]['error']}", file=sys.stderr)
    written, bad = index_clips(out)
    for line in bad:
        print(f"warning: skipped bad clip: {line}", file=sys.stderr)
    for name, problem in sorted(problems.items()):
        if problem:
            print(f"note: {name} has frames and parameters only: {problem}", file=sys.stderr)
    write_portraits(out, written)
    index = {"format": 1, "parameter_names": list(PARAMETER_NAMES), "clips": [f"{c.character}/{c.name}" for c in written],
             "ground_truth_problems": {k: v for k, v in sorted(problems.items()) if v}, "failed": failed}
    atomic_write_text(out / "index.json", json.dumps(index, indent=1))
    return rendered


def write_portraits(out: Path, clips: list[ClipInfo], background: tuple[int, int, int] = (255, 255, 255)) -> None:
    """``out/<Character>/portrait.png`` for every character that lacks one: the neutral first frame of its first
    trajectory clip (trajectories start at the default pose) over ``background``, for ``animate --portrait``."""
    for character in sorted({c.character for c in clips}):
        target = out / character / PORTRAIT_FILE
        own = [c for c in clips if c.character == character and c.source in ("random", "replay")]
        if own and not target.is_file():
            rgb = composite(np.asarray(open_arrays(own[0])["frames"][0]), background)
            atomic_write_png(target, rgb)


def _render_clips(plan: list[ClipInfo], workers: int, progress: Progress, bar, renderable: dict[str, Path], out: Path, physics: bool,
                  overrides: dict, failed: dict[str, dict], problems: dict, verbose: bool = False) -> list[ClipInfo]:
    """Render ``plan`` in one pool of ``workers`` processes, recording models that raise in ``failed`` and each
    character's ground-truth problem in ``problems``; returns the clips left unrendered when a worker died."""
    left = []
    with render_pool(workers, quiet=not verbose) as pool:
        futures = {pool.submit(render_clip, str(renderable[c.character]), str(out), c, physics, overrides.get(c.character)): c for c in plan}
        for future in as_completed(futures):
            clip = futures[future]
            try:
                _, problems[clip.character] = future.result()
            except BrokenProcessPool:
                left.append(clip)
                continue
            except UserFacingError as exc:
                failed.setdefault(clip.character, {"error": str(exc)})
            progress.advance(bar)
    return left


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="folder of model folders <Name>/*.model3.json (Cubism 3/4) or <Name>/*.model.json (Cubism 2)")
    parser.add_argument("--out", type=Path, required=True, help="dataset folder")
    parser.add_argument("--size", type=int, default=256, help="crop size in pixels")
    parser.add_argument("--clips", type=int, default=4, help="random-trajectory clips per character")
    parser.add_argument("--replays", type=int, default=2, help="trajectories rendered on every character")
    parser.add_argument("--frames", type=int, default=60, help="frames per clip")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2, help="rendering processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--physics", action="store_true", help="load the models' physics (hair sway) for trajectory clips; authored motions always have it")
    parser.add_argument("--characters", nargs="+", help="only these model folders")
    parser.add_argument("--motions", action="store_true", help="also render each authored motion (at most --frames frames)")
    parser.add_argument("--region-overrides", type=Path, help="JSON {Name: {part or drawable ID: kind}} for region maps "
                        f"where the model's names are not informative (kinds: {', '.join(KINDS)})")
    parser.add_argument("--retry-failed", action="store_true", help=f"render models that failed {MAX_ATTEMPTS} times before")
    parser.add_argument("--verbose", action="store_true", help="show live2d-py's and the Cubism core's own output")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        overrides = read_region_overrides(args.region_overrides) if args.region_overrides else None
        count = render_dataset(args.models, args.out, args.size, args.clips, args.replays, args.frames, args.fps,
                               args.workers, args.seed, args.physics, args.characters, args.motions, overrides, args.retry_failed, args.verbose)
    print(f"rendered {count} clips into {args.out}")


if __name__ == "__main__":
    main()
