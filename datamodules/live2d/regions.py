"""Semantic regions of a Live2D model: which drawable is eye, brow, mouth, face, hair or body, and label renders.

Every drawable gets a *kind* from its own ID and those of its part and the part's ancestors: the IDs are
split into words (``Part01EyeBall001`` → part, eye, ball; ``PARTS_01_BROW_001`` → parts, brow) and the first
part with a known word decides. Where names are not informative, a per-model override table maps part or
drawable IDs to kinds (built in: :data:`REGION_OVERRIDES`; the render command takes more from a JSON file).

Kinds map onto the shared labels :data:`~core.vocabulary.REGIONS` (``iris`` counts as eye, ``nose`` as face);
eyes, irises and brows are split into the character's left and right (the image's right and left) by where
they lie at the default pose.

Region maps are rendered, not rasterised from meshes, so layering, clipping masks and transparency match the
image: a second instance of the model draws with textures whose colour is replaced by each drawable's region
colour (alpha kept); additive and multiplicative drawables get the colours that leave the picture unchanged.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import cv2
import numpy as np

from core.vocabulary import REGIONS
from datamodules.live2d.moc import BLEND_ADDITIVE, BLEND_MULTIPLICATIVE, Drawable

KINDS: tuple[str, ...] = ("face", "eye", "iris", "brow", "mouth", "nose", "hair", "body")
# (kind, words that all must appear in one ID); checked in order, so "eye ball" wins over "eye".
_KIND_WORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("iris", ("eye", "ball")), ("iris", ("eyeball",)), ("iris", ("iris",)), ("iris", ("pupil",)),
    ("brow", ("brow",)), ("brow", ("mayu",)), ("eye", ("eye",)), ("mouth", ("mouth",)), ("mouth", ("oral",)),
    ("nose", ("nose",)), ("hair", ("hair",)), ("hair", ("hat",)),
    ("face", ("face",)), ("face", ("cheek",)), ("face", ("hoho",)), ("face", ("ear",)), ("face", ("tear",)),
    ("face", ("head",)),
)
# Per-model corrections: model name → {part or drawable ID: kind}.
REGION_OVERRIDES: dict[str, dict[str, str]] = {
    "Wanko": {"PARTS_01_EAR_001": "hair"},  # a dog's ears are fur, the colour of its head, not skin
    "Rice": {"ArtMesh38": "mouth", "ArtMesh39": "nose"},  # her mouth and nose are unnamed meshes of PartFace
    "Mark": {"EyeL1": "face", "EyeR1": "face"},  # the skin-coloured lids that slide over his eyes when they close
}
# Label colours (RGB), the corners of the RGB cube, one per region except background; regions that often touch
# differ in one channel.
PALETTE: dict[str, tuple[int, int, int]] = {
    "face": (255, 255, 255), "hair": (255, 255, 0), "body": (255, 0, 0), "mouth": (0, 255, 255),
    "left_eye": (255, 0, 255), "right_eye": (0, 0, 255), "left_brow": (0, 255, 0), "right_brow": (0, 0, 0),
}
_CORNER_REGION = np.zeros(8, np.uint8)  # RGB cube corner (r·4 + g·2 + b, each 0/1) → region index
for _name, _rgb in PALETTE.items():
    _CORNER_REGION[(_rgb[0] // 255) * 4 + (_rgb[1] // 255) * 2 + _rgb[2] // 255] = REGIONS.index(_name)


def id_words(identifier: str) -> set[str]:
    """Lower-case words of a CamelCase or UPPER_SNAKE ID (digits dropped)."""
    return {w.lower() for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+", identifier)}


def drawable_kind(drawable: Drawable, overrides: dict[str, str] | None = None) -> str:
    """The kind (one of :data:`KINDS`) of ``drawable``: an override for it or its parts, else the first of its
    own ID and its parts' IDs (innermost first) with a known word, else ``body``."""
    overrides = overrides or {}
    for identifier in (drawable.id, *drawable.parts):
        if identifier in overrides:
            return overrides[identifier]
    for identifier in (drawable.id, *drawable.parts):
        words = id_words(identifier)
        for kind, needed in _KIND_WORDS:
            if words.issuperset(needed):
                return kind
    return "body"


def check_overrides(overrides: dict[str, str], source: str) -> None:
    """Raise ``ValueError`` naming ``source`` if an override maps to an unknown kind."""
    bad = {k: v for k, v in overrides.items() if v not in KINDS}
    if bad:
        raise ValueError(f"{source}: region overrides {bad} name unknown kinds; expected one of {', '.join(KINDS)}")


def region_names(kinds: list[str], centres_x: np.ndarray, midline_x: float) -> list[str]:
    """The region (a name in :data:`~core.vocabulary.REGIONS`, never background) of each drawable.

    Args:
        kinds: each drawable's kind.
        centres_x: each drawable's horizontal centre at the default pose (any units where x grows to the
            image's right).
        midline_x: the face's vertical midline in the same units; eyes and brows right of it are the
            character's left.
    """
    names = []
    for kind, x in zip(kinds, centres_x):
        side = "left" if x > midline_x else "right"
        if kind in ("eye", "iris"):
            names.append(f"{side}_eye")
        elif kind == "brow":
            names.append(f"{side}_brow")
        else:
            names.append({"nose": "face"}.get(kind, kind))
    return names


def paint_label_textures(textures: list[Path], drawables: list[Drawable], regions: list[str], out: Path) -> list[Path]:
    """Copies of ``textures`` whose colour is each drawable's region colour (alpha kept), written to ``out``.

    Additive drawables are painted black and multiplicative ones white: both then leave the labels beneath
    them unchanged. Texture coordinates have v pointing up (row 0 of the image is v = 1).
    """
    painted = []
    for t, path in enumerate(textures):
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 3 or image.shape[2] != 4:
            raise ValueError(f"{str(path)!r}: expected an RGBA texture image")
        height, width = image.shape[:2]
        colour = np.zeros((height, width, 3), np.uint8)
        for drawable, region in zip(drawables, regions):
            if drawable.texture != t or not len(drawable.triangles):
                continue
            rgb = {BLEND_ADDITIVE: (0, 0, 0), BLEND_MULTIPLICATIVE: (255, 255, 255)}.get(drawable.blend, PALETTE[region])
            pixels = np.round(np.stack([drawable.uvs[:, 0] * width, (1.0 - drawable.uvs[:, 1]) * height], 1) * 16).astype(np.int32)
            cv2.fillPoly(colour, list(pixels[drawable.triangles]), rgb[::-1], lineType=cv2.LINE_8, shift=4)
        target = out / f"labels_{t:02d}.png"
        cv2.imwrite(str(target), np.dstack([colour, image[..., 3]]))
        painted.append(target)
    return painted


def decode_labels(rgba: np.ndarray, min_alpha: int = 128) -> np.ndarray:
    """Region map from a label render.

    Args:
        rgba: ``H×W×4`` uint8 premultiplied RGBA drawn with :func:`paint_label_textures`'s textures.
        min_alpha: pixels less opaque than this are background.

    Returns:
        ``H×W`` uint8 indices into :data:`~core.vocabulary.REGIONS`: the nearest palette colour, which for
        colours at the corners of the RGB cube is each channel thresholded at half the pixel's alpha.
    """
    alpha = rgba[..., 3].astype(np.int16)
    bits = (2 * rgba[..., :3].astype(np.int16) > alpha[..., None]).astype(np.uint8) @ np.array([4, 2, 1], np.uint8)
    labels = _CORNER_REGION[bits]
    labels[alpha < min_alpha] = REGIONS.index("background")
    return labels


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column index of every pixel, float32 (cached: one size per dataset)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return ys, xs


def split_sides(labels: np.ndarray, left_eye: np.ndarray, right_eye: np.ndarray) -> np.ndarray:
    """Region map with eyes and brows split into the character's left and right (in place and returned).

    Args:
        labels: ``H×W`` uint8 region map where both eyes are ``left_eye`` and both brows ``left_brow``.
        left_eye, right_eye: ``(2,)`` pixel centres of the character's left eye (the image's right) and right eye.

    Pixels on the right eye's side of the line halfway between the eyes, perpendicular to the line joining them,
    become ``right_eye`` / ``right_brow``.
    """
    axis = np.asarray(left_eye, np.float32) - np.asarray(right_eye, np.float32)
    middle = (np.asarray(left_eye, np.float32) + np.asarray(right_eye, np.float32)) / 2
    ys, xs = _pixel_grid(*labels.shape)
    right_side = (xs - middle[0]) * axis[0] + (ys - middle[1]) * axis[1] < 0
    for region in ("eye", "brow"):
        mask = right_side & (labels == REGIONS.index(f"left_{region}"))
        labels[mask] = REGIONS.index(f"right_{region}")
    return labels
