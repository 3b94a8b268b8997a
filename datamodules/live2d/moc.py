"""``MocLayout``: what a ``.moc3`` says about its drawables, read through the Cubism Core that live2d-py ships.

live2d-py 1.0.0 does not expose which part a drawable belongs to, its blend mode or its texture coordinates; the
Cubism Core C functions exported by its extension module do. This module revives the moc in its own memory (no
GL, no renderer), initialises a model at default parameters and copies out the static layout.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_P = ctypes.c_void_p
_SIGNATURES = {
    "csmReviveMocInPlace": (_P, [_P, ctypes.c_uint]),
    "csmGetSizeofModel": (ctypes.c_uint, [_P]),
    "csmInitializeModelInPlace": (_P, [_P, _P, ctypes.c_uint]),
    "csmUpdateModel": (None, [_P]),
    "csmGetDrawableCount": (ctypes.c_int, [_P]),
    "csmGetDrawableIds": (ctypes.POINTER(ctypes.c_char_p), [_P]),
    "csmGetDrawableConstantFlags": (ctypes.POINTER(ctypes.c_uint8), [_P]),
    "csmGetDrawableParentPartIndices": (ctypes.POINTER(ctypes.c_int), [_P]),
    "csmGetDrawableTextureIndices": (ctypes.POINTER(ctypes.c_int), [_P]),
    "csmGetDrawableOpacities": (ctypes.POINTER(ctypes.c_float), [_P]),
    "csmGetDrawableVertexCounts": (ctypes.POINTER(ctypes.c_int), [_P]),
    "csmGetDrawableVertexUvs": (ctypes.POINTER(ctypes.POINTER(ctypes.c_float)), [_P]),
    "csmGetDrawableIndexCounts": (ctypes.POINTER(ctypes.c_int), [_P]),
    "csmGetDrawableIndices": (ctypes.POINTER(ctypes.POINTER(ctypes.c_ushort)), [_P]),
    "csmGetPartCount": (ctypes.c_int, [_P]),
    "csmGetPartIds": (ctypes.POINTER(ctypes.c_char_p), [_P]),
    "csmGetPartParentPartIndices": (ctypes.POINTER(ctypes.c_int), [_P]),
}
BLEND_ADDITIVE = 1
BLEND_MULTIPLICATIVE = 2


def _core() -> ctypes.CDLL:
    import live2d  # the render process's import (see headless_gl); here only to find the extension module

    library = ctypes.CDLL(str(next(Path(live2d.__file__).parent.glob("_live2d*.so"))))
    for name, (result, arguments) in _SIGNATURES.items():
        function = getattr(library, name)
        function.restype, function.argtypes = result, arguments
    return library


def _aligned(size: int, alignment: int) -> tuple[ctypes.Array, int]:
    buffer = ctypes.create_string_buffer(size + alignment)
    return buffer, (ctypes.addressof(buffer) + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class Drawable:
    """One art mesh.

    Attributes:
        id: drawable ID (as ``live2d.Model.GetDrawableIds`` lists it, same order).
        parts: IDs of its part and the part's ancestors, innermost first.
        blend: 0 normal, :data:`BLEND_ADDITIVE` or :data:`BLEND_MULTIPLICATIVE`.
        texture: index into the model's textures.
        uvs: ``V×2`` texture coordinates in ``[0, 1]``, v pointing up.
        triangles: ``T×3`` vertex indices.
        visible: drawn at default parameters (opacity above zero).
    """

    id: str
    parts: tuple[str, ...]
    blend: int
    texture: int
    uvs: np.ndarray
    triangles: np.ndarray
    visible: bool


def read_moc_layout(moc3: str | Path) -> list[Drawable]:
    """Every drawable of ``moc3`` in the core's drawable order (the caller checked the file's header)."""
    core = _core()
    data = Path(moc3).read_bytes()
    moc_buffer, moc_address = _aligned(len(data), 64)
    ctypes.memmove(moc_address, data, len(data))
    moc = core.csmReviveMocInPlace(moc_address, len(data))
    if not moc:
        raise ValueError(f"{str(moc3)!r}: the Cubism Core could not read this .moc3")
    size = core.csmGetSizeofModel(moc)
    model_buffer, model_address = _aligned(size, 16)
    model = core.csmInitializeModelInPlace(moc, model_address, size)
    core.csmUpdateModel(model)
    part_ids, part_parents = core.csmGetPartIds(model), core.csmGetPartParentPartIndices(model)

    def chain(part: int) -> tuple[str, ...]:
        names = []
        while part >= 0:
            names.append(part_ids[part].decode())
            part = part_parents[part]
        return tuple(names)

    ids, flags = core.csmGetDrawableIds(model), core.csmGetDrawableConstantFlags(model)
    parents, textures = core.csmGetDrawableParentPartIndices(model), core.csmGetDrawableTextureIndices(model)
    opacities = core.csmGetDrawableOpacities(model)
    vertex_counts, uvs = core.csmGetDrawableVertexCounts(model), core.csmGetDrawableVertexUvs(model)
    index_counts, indices = core.csmGetDrawableIndexCounts(model), core.csmGetDrawableIndices(model)
    drawables = [
        Drawable(
            id=ids[d].decode(),
            parts=chain(parents[d]),
            blend=flags[d] & (BLEND_ADDITIVE | BLEND_MULTIPLICATIVE),
            texture=textures[d],
            uvs=np.ctypeslib.as_array(uvs[d], (vertex_counts[d] * 2,)).reshape(-1, 2).copy(),
            triangles=np.ctypeslib.as_array(indices[d], (index_counts[d],)).reshape(-1, 3).astype(np.int32) if index_counts[d] else np.zeros((0, 3), np.int32),
            visible=opacities[d] > 0.0,
        )
        for d in range(core.csmGetDrawableCount(model))
    ]
    del moc_buffer, model_buffer  # the core's structures lived in these buffers; nothing above refers to them
    return drawables
