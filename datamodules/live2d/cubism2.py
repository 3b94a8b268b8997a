"""What a Cubism 2 model tells about its drawables through live2d-py 1.0.0, and its label colours.

The Cubism 2 core behind ``live2d.Model`` exposes part IDs (informative: ``PARTS_01_EYE_001``), drawable IDs
(uninformative: ``D_PSD.31``), vertices and triangle indices, but not which part a drawable belongs to, its
texture coordinates, blend mode or opacity. Two measured facts fill the gap:

- ``SetDrawableMultiplyColor(d, ...)`` on a Cubism 2 model sets the multiply colour of drawable ``d``'s *part*
  (Cubism 2 has no drawable colours), and ``GetPartMultiplyColor`` reads part colours back, so setting one
  drawable's colour and seeing which part changed names its part (restored straight after).
- Part colours take effect when drawing: multiply ``(0, 0, 0)`` with screen colour ``c`` draws the part in flat
  ``c`` with its own alpha, which is how a second instance of the model renders the region map (layering,
  clipping and transparency as in the picture).

- Which parts show at the default pose is seen by drawing each face part alone in white (:func:`visible_parts`):
  Nipsilon holds five characters of which one shows, and only its face should set the crop.

What stays missing on Cubism 2, and what it costs: opacity per drawable (a drawable of a shown part counts as
shown, so keypoints and the crop also use meshes that a parameter fades out), blend modes (additive
and multiplicative drawables are painted like normal ones), and colours per drawable — a part holding both eyes
gets one colour, so eyes and brows are split into left and right afterwards along the face's midline
(:func:`~datamodules.live2d.regions.split_sides`).
"""

from __future__ import annotations

import numpy as np

from datamodules.live2d.moc import Drawable
from datamodules.live2d.regions import PALETTE

_PROBE = (0.25, 0.5, 0.75, 1.0)


def visible_parts(model, draw, candidates: list[str]) -> set[str]:
    """The ``candidates`` (part IDs) of ``model`` that show pixels when drawn at its current pose.

    Each candidate is drawn white with every other part black (translucent overlays then only darken it): it
    shows where some pixel of at least half coverage stays brighter than half.

    Args:
        model: a loaded Cubism 2 ``live2d.Model``; its part colours are restored afterwards.
        draw: draws the model and returns the ``H×W×4`` uint8 premultiplied RGBA read back.
        candidates: the parts to test.
    """
    parts = list(model.GetPartIds())
    saved = [(model.GetPartMultiplyColor(p), model.GetPartScreenColor(p)) for p in range(len(parts))]
    shown = set()
    try:
        for p in range(len(parts)):
            model.SetPartMultiplyColor(p, 0.0, 0.0, 0.0, 1.0)
        for candidate in candidates:
            for p, part in enumerate(parts):
                level = 1.0 if part == candidate else 0.0
                model.SetPartScreenColor(p, level, level, level, 1.0)
            rgba = draw().astype(np.float32)
            covered = rgba[..., 3] >= 128
            if covered.any() and (rgba[covered][:, 0] * 255.0 / rgba[covered][:, 3]).max() > 128:
                shown.add(candidate)
    finally:
        for p, (multiply, screen) in enumerate(saved):
            model.SetPartMultiplyColor(p, *multiply)
            model.SetPartScreenColor(p, *screen)
    return shown


def cubism2_layout(model) -> list[Drawable]:
    """Every drawable of a loaded Cubism 2 ``live2d.Model`` with its part (no texture coordinates, triangles or
    blend mode; all counted visible — see :func:`visible_parts`)."""
    parts = list(model.GetPartIds())
    layout = []
    for index, drawable_id in enumerate(model.GetDrawableIds()):
        before = [tuple(model.GetPartMultiplyColor(p)) for p in range(len(parts))]
        model.SetDrawableMultiplyColor(index, *_PROBE)
        changed = [p for p in range(len(parts)) if tuple(model.GetPartMultiplyColor(p)) != before[p]]
        for p in changed:
            model.SetPartMultiplyColor(p, *before[p])
        if len(changed) != 1:
            raise ValueError(f"drawable {drawable_id} belongs to {len(changed)} parts by the colour probe, expected 1")
        layout.append(Drawable(drawable_id, (parts[changed[0]],), 0, 0, np.zeros((0, 2), np.float32), np.zeros((0, 3), np.int32), True))
    return layout


def paint_parts(model, layout: list[Drawable], regions: list[str]) -> None:
    """Draw every part of ``model`` in the flat colour of its drawables' region (left and right of a region
    share the left colour; :func:`~datamodules.live2d.regions.split_sides` separates them)."""
    parts = list(model.GetPartIds())
    for drawable, region in zip(layout, regions):
        shared = region.replace("right_", "left_")
        r, g, b = (c / 255.0 for c in PALETTE[shared])
        index = parts.index(drawable.parts[0])
        model.SetPartMultiplyColor(index, 0.0, 0.0, 0.0, 1.0)
        model.SetPartScreenColor(index, r, g, b, 1.0)
