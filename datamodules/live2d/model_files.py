"""``ModelFiles``: a Live2D model's setting file and everything it references, checked in Python.

Two generations are read, told apart by the setting file's name:

    Cubism 3/4   <Name>/<name>.model3.json   {"FileReferences": {"Moc": "x.moc3", "Textures": [...],
                                              "Physics": ..., "Pose": ..., "Motions": {group: [{"File": ...}]},
                                              "Expressions": [{"Name": ..., "File": ...}]}}
    Cubism 2     <Name>/<name>.model.json    {"model": "x.moc", "textures": [...], "physics": ..., "pose": ...,
                                              "motions": {group: [{"file": "x.mtn"}]},
                                              "expressions": [{"name": ..., "file": ...}]}

The Cubism cores end the process (no Python exception) on a missing or damaged file, so every referenced file is
checked here first: it exists, a ``.moc3`` starts with ``MOC3`` and a ``.moc`` with ``moc`` and a version byte,
both are longer than their header, a ``.motion3.json`` is JSON and a ``.mtn`` has at least one
``PARAM_ID=v,v,...`` curve of numbers. Nothing here imports ``live2d``.

A missing or damaged file stops the model, except motion files: those only matter to authored-motion clips, so a
bad one is recorded in :attr:`ModelFiles.motion_problems` and the model still renders trajectories (published
models do this: Tsumiki's setting names ``mtn/p01.mtn``, the file is ``mtn/P01.mtn``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import UserFacingError

SUFFIXES = {".model3.json": 3, ".model.json": 2}
_MIN_MOC_BYTES = 64


class Live2DModelError(UserFacingError):
    """A Live2D model's files are missing, malformed, or it lacks the standard face parameters."""


@dataclass(frozen=True)
class ModelFiles:
    """A checked model setting.

    Attributes:
        path: the setting file (``*.model3.json`` or ``*.model.json``).
        generation: 3 (Cubism 3/4) or 2 (Cubism 2).
        setting: the parsed setting file.
        moc: the ``.moc3`` / ``.moc`` file.
        textures: texture images in the model's texture order.
        motions: ``"Group:index"`` → motion file for every usable motion, in the setting's order (the group may
            be empty; the index is the motion's position in the setting's list).
        motion_problems: ``"Group:index"`` → why that motion cannot be used (missing or damaged file).
    """

    path: Path
    generation: int
    setting: dict
    moc: Path
    textures: list[Path]
    motions: dict[str, Path] = field(default_factory=dict)
    motion_problems: dict[str, str] = field(default_factory=dict)

    def native_motion(self, motion: str) -> tuple[str, int]:
        """Group and index of usable ``motion`` (``"Group:index"``) in the model as live2d-py loads it from its
        own file, which skips motion files that do not exist."""
        group, index = motion.rsplit(":", 1)
        missing = [m for m in self.motion_problems if m.rsplit(":", 1)[0] == group and int(m.rsplit(":", 1)[1]) < int(index)]
        return group, int(index) - len(missing)

    def check_motions_loadable(self) -> None:
        """Raise :class:`Live2DModelError` if a motion file exists but is damaged (the native loader would read it)."""
        damaged = {m: p for m, p in self.motion_problems.items() if "does not exist" not in p}
        if damaged:
            raise Live2DModelError(f"{str(self.path)!r}: authored motions cannot be loaded: {'; '.join(damaged.values())}")

    @property
    def name(self) -> str:
        """The character's name: its folder's name."""
        return self.path.parent.name

    def setting_json(self, physics: bool, textures: list[Path] | None = None) -> str:
        """The setting as a JSON string to load with an empty root folder: no motions and expressions, no
        physics unless ``physics``, every path absolute, ``textures`` in place of the model's own if given.
        (Models with motions are loaded from their own file: live2d-py 1.0.0 crashes on an edited JSON string
        that lists motions.)"""
        textures = [str(t) for t in (textures or self.textures)]
        if self.generation == 3:
            refs = self.setting["FileReferences"]
            kept = {k: str(self.path.parent / v) for k, v in refs.items()
                    if isinstance(v, str) and k not in ("Motions", "Expressions") and (physics or k != "Physics")}
            return json.dumps({**self.setting, "FileReferences": {**kept, "Textures": textures}})
        kept = {k: v for k, v in self.setting.items() if k not in ("motions", "expressions") and (physics or k != "physics")}
        for key in ("model", "physics", "pose"):
            if isinstance(kept.get(key), str):
                kept[key] = str(self.path.parent / kept[key])
        return json.dumps({**kept, "textures": textures})


def find_setting_files(models: Path) -> dict[str, Path]:
    """``{Name: setting file}`` for every ``<models>/<Name>/`` holding a ``*.model3.json`` or ``*.model.json``
    (the first in name order where a folder holds several)."""
    found: dict[str, Path] = {}
    for path in sorted(p for suffix in SUFFIXES for p in models.glob(f"*/*{suffix}")):
        found.setdefault(path.parent.name, path)
    return dict(sorted(found.items()))


def find_models(models: Path, names: list[str] | None) -> dict[str, Path]:
    """``{Name: setting file}`` for the model folders under ``models`` (only ``names`` if given)."""
    found = find_setting_files(models)
    if not found:
        raise UserFacingError(f"no <Name>/*.model3.json or <Name>/*.model.json under {str(models)!r}")
    if names:
        unknown = sorted(set(names) - set(found))
        if unknown:
            raise UserFacingError(f"no model folder for {', '.join(unknown)} under {str(models)!r}; found {', '.join(found)}")
        found = {n: found[n] for n in names}
    return found


def read_model_files(path: str | Path) -> ModelFiles:
    """Parse a setting file of either generation and check every file it references.

    Raises:
        Live2DModelError: one line naming the file and the problem.
    """
    path = Path(path)
    generation = next((g for suffix, g in SUFFIXES.items() if path.name.endswith(suffix)), None)
    if generation is None:
        raise Live2DModelError(f"{str(path)!r} is neither a Cubism 3/4 *.model3.json nor a Cubism 2 *.model.json")
    if not path.is_file():
        raise Live2DModelError(f"Live2D model file {str(path)!r} does not exist")
    try:
        setting = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Live2DModelError(f"{str(path)!r} is not a readable {path.name.split('.', 1)[1]} file: {exc}") from exc
    if not isinstance(setting, dict):
        raise Live2DModelError(f"{str(path)!r}: expected a JSON object")
    return _read_cubism3(path, setting) if generation == 3 else _read_cubism2(path, setting)


def _existing(path: Path, where: str, relative: object) -> Path:
    if not isinstance(relative, str) or not (path.parent / relative).is_file():
        raise Live2DModelError(f"{str(path)!r}: {where} = {relative!r} does not exist")
    return path.parent / relative


def _check_moc(moc: Path, magic: bytes, kind: str) -> None:
    with open(moc, "rb") as handle:
        header = handle.read(_MIN_MOC_BYTES)
    if len(header) < _MIN_MOC_BYTES or not header.startswith(magic):
        raise Live2DModelError(f"{str(moc)!r} is not a {kind} file (no {magic.decode()} header, or shorter than {_MIN_MOC_BYTES} bytes; truncated or corrupt?)")


def _motion_entries(path: Path, groups: object, key: str, where: str, check) -> tuple[dict[str, Path], dict[str, str]]:
    """Usable motions and the problems of the others; ``check(file, what)`` raises for a damaged file."""
    if groups is None:
        return {}, {}
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise Live2DModelError(f"{str(path)!r}: {where} must map group names to lists of motions")
    motions, problems = {}, {}
    for group, entries in groups.items():
        for i, entry in enumerate(entries):
            name = f"{group}:{i}"
            if not isinstance(entry, dict):
                raise Live2DModelError(f"{str(path)!r}: {where}[{group!r}][{i}] must be an object with {key!r}")
            try:
                motion = _existing(path, f"{where}[{group!r}][{i}].{key}", entry.get(key))
                check(motion, f"motion {name} of {path.name}")
                motions[name] = motion
            except Live2DModelError as exc:
                problems[name] = str(exc)
    return motions, problems


def check_motion3(path: Path, what: str) -> None:
    """Raise :class:`Live2DModelError` unless ``path`` is a readable JSON file."""
    try:
        json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Live2DModelError(f"{str(path)!r} ({what}) is not a readable motion3.json: {exc}") from exc


def _read_cubism3(path: Path, setting: dict) -> ModelFiles:
    refs = setting.get("FileReferences")
    if not isinstance(refs, dict) or not isinstance(refs.get("Moc"), str) or not isinstance(refs.get("Textures"), list):
        raise Live2DModelError(f"{str(path)!r} lacks FileReferences.Moc (a path) and FileReferences.Textures (a list)")
    moc = _existing(path, "FileReferences.Moc", refs["Moc"])
    textures = [_existing(path, f"FileReferences.Textures[{i}]", t) for i, t in enumerate(refs["Textures"])]
    for key in ("Physics", "Pose"):
        if key in refs:
            _existing(path, f"FileReferences.{key}", refs[key])
    _check_moc(moc, b"MOC3", ".moc3")
    motions, problems = _motion_entries(path, refs.get("Motions"), "File", "FileReferences.Motions", check_motion3)
    return ModelFiles(path, 3, setting, moc, textures, motions, problems)


def _read_cubism2(path: Path, setting: dict) -> ModelFiles:
    if not isinstance(setting.get("model"), str) or not isinstance(setting.get("textures"), list):
        raise Live2DModelError(f"{str(path)!r} lacks \"model\" (a .moc path) and \"textures\" (a list)")
    moc = _existing(path, "model", setting["model"])
    textures = [_existing(path, f"textures[{i}]", t) for i, t in enumerate(setting["textures"])]
    for key in ("physics", "pose"):
        if setting.get(key) is not None:
            _existing(path, key, setting[key])
    _check_moc(moc, b"moc", ".moc (Cubism 2)")
    motions, problems = _motion_entries(path, setting.get("motions"), "file", "motions", check_mtn)
    return ModelFiles(path, 2, setting, moc, textures, motions, problems)


def check_mtn(path: Path, what: str) -> None:
    """Raise :class:`Live2DModelError` unless ``path`` is a text ``.mtn`` with at least one curve
    ``ID=v,v,...`` of numbers and no curve with a value that is not a number."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Live2DModelError(f"{str(path)!r} ({what}) is not a readable .mtn text file: {exc}") from exc
    curves = 0
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#") or line.startswith("$"):
            continue
        key, sep, values = line.partition("=")
        try:
            if not sep or not key.strip():
                raise ValueError("expected ID=v,v,...")
            [float(v) for v in values.split(",")]
        except ValueError as exc:
            raise Live2DModelError(f"{str(path)!r} ({what}) line {number}: not a motion curve ({exc})") from exc
        curves += 1
    if not curves:
        raise Live2DModelError(f"{str(path)!r} ({what}) has no motion curves (expected lines PARAM_ID=v,v,...)")
