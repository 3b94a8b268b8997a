"""Render Live2D training clips: ``python -m lightning_app.render --models ../shared/live2d --out data/live2d``.

For every ``<models>/<Name>/<Name>.model3.json`` it renders ``--clips`` clips along random smooth trajectories
of the standard face parameters, ``--replays`` trajectories shared by all characters (the same motion on
every character: cross-identity ground truth) and, with ``--motions``, the model's own authored motions. Clips
are head crops of ``--size`` pixels with per-frame region maps and keypoints, written atomically in the format of
:mod:`datamodules.live2d.clips`; finished clips are skipped, so an interrupted run resumes. Work is
spread over ``--workers`` spawned processes (each owns its GL context) with a progress bar.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from rich.progress import Progress

from datamodules.live2d.clips import ClipInfo, index_clips
from datamodules.live2d.regions import KINDS, check_overrides
from datamodules.live2d.render_process import render_clip
from datamodules.parameters import PARAMETER_NAMES
from lightning_app.files import atomic_write_text
from modules.errors import UserFacingError, exit_on_user_error

REPLAY_SEED_BASE = 1_000_000


def find_models(models: Path, names: list[str] | None) -> dict[str, Path]:
    """``{Name: model3.json}`` for the model folders under ``models`` (only ``names`` if given)."""
    found = {p.parent.name: p for p in sorted(models.glob("*/*.model3.json"))}
    if not found:
        raise UserFacingError(f"no <Name>/*.model3.json under {str(models)!r}")
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise UserFacingError(f"no model folder for {', '.join(unknown)} under {str(models)!r}; found {', '.join(found)}")
        found = {n: found[n] for n in names}
    return found


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
    """``"Group:index"`` for every motion listed in a model3.json."""
    groups = json.loads(model_json.read_text(encoding="utf-8")).get("FileReferences", {}).get("Motions", {})
    return [f"{group}:{i}" for group, entries in groups.items() for i in range(len(entries))]


def plan_clips(characters: dict[str, Path], clips: int, replays: int, frames: int, fps: float, size: int, seed: int,
               motions: bool = False) -> list[ClipInfo]:
    """Every clip to render: per character ``clips`` own random trajectories, ``replays`` shared ones and, with
    ``motions``, each authored motion (at most ``frames`` frames)."""
    plan = []
    for character, model_json in characters.items():
        if motions:
            for motion in authored_motions(model_json):
                name = "motion_" + motion.replace(":", "_")
                plan.append(ClipInfo(character, name, "motion", 0, fps, size, frames, PARAMETER_NAMES, (), motion=motion))
        own = zlib.crc32(character.encode()) * 1000 + seed * 100_000_000
        for i in range(clips):
            plan.append(ClipInfo(character, f"random_{i:03d}", "random", own + i, fps, size, frames, PARAMETER_NAMES, ()))
        for r in range(replays):
            plan.append(ClipInfo(character, f"replay_{r:03d}", "replay", REPLAY_SEED_BASE + seed * 1000 + r, fps, size, frames, PARAMETER_NAMES, ()))
    return plan


def render_dataset(models: Path, out: Path, size: int = 256, clips: int = 4, replays: int = 2, frames: int = 60, fps: float = 30.0,
                   workers: int = 2, seed: int = 0, physics: bool = False, characters: list[str] | None = None,
                   motions: bool = False, region_overrides: dict[str, dict[str, str]] | None = None) -> int:
    """Render what is missing under ``out``, then write ``out/index.json``; returns the number of clips rendered."""
    found = find_models(models, characters)
    plan = [c for c in plan_clips(found, clips, replays, frames, fps, size, seed, motions) if not (out / c.character / c.name / "clip.json").is_file()]
    with ProcessPoolExecutor(max_workers=max(1, workers), mp_context=multiprocessing.get_context("spawn")) as pool, Progress() as progress:
        bar = progress.add_task(f"rendering {len(plan)} clips", total=len(plan))
        overrides = region_overrides or {}
        futures = {pool.submit(render_clip, str(found[c.character]), str(out), c, physics, overrides.get(c.character)): c for c in plan}
        for future in as_completed(futures):
            clip = futures[future]
            try:
                future.result()
            except BrokenProcessPool as exc:
                raise UserFacingError(f"a rendering process died on {clip.character}/{clip.name} ({found[clip.character]}); "
                                      "finished clips are kept, run again to resume") from exc
            progress.advance(bar)
    written, bad = index_clips(out)
    for line in bad:
        print(f"warning: skipped bad clip: {line}", file=sys.stderr)
    index = {"format": 1, "parameter_names": list(PARAMETER_NAMES), "clips": [f"{c.character}/{c.name}" for c in written]}
    atomic_write_text(out / "index.json", json.dumps(index, indent=1))
    return len(plan)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="folder of <Name>/<Name>.model3.json model folders")
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
    args = parser.parse_args(argv)
    with exit_on_user_error():
        overrides = read_region_overrides(args.region_overrides) if args.region_overrides else None
        count = render_dataset(args.models, args.out, args.size, args.clips, args.replays, args.frames, args.fps,
                               args.workers, args.seed, args.physics, args.characters, args.motions, overrides)
    print(f"rendered {count} clips into {args.out}")


if __name__ == "__main__":
    main()
