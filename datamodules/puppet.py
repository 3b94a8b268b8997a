"""The procedural anime-face puppet: the embedded default data, rendered with OpenCV.

A puppet is an identity (colours, shapes, proportions) posed by Live2D's standard face parameters
(:mod:`core.vocabulary`). Rendering is a pure function of ``(identity, parameters, size)``, so a seed
fixes every pixel. Besides the RGB image each frame carries ground truth in the same form the Live2D renderer
gives: a semantic region map (:data:`core.vocabulary.REGIONS`) and 2-D keypoints (:data:`core.vocabulary.KEYPOINT_NAMES`) in pixel
coordinates (x right, y down, origin at the top-left pixel's corner).

Head pose is a 2.5-D projection: each part has a depth, yaw (``ParamAngleX``) and pitch (``ParamAngleY``)
shift parts by depth (front parts move most, back hair moves the other way), roll (``ParamAngleZ``) rotates
the head about the neck; positive roll turns the head counter-clockwise on screen.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from core.vocabulary import KEYPOINT_NAMES, PARAMETER_INDEX, PARAMETER_NAMES, REGIONS, default_parameters, parameter_bounds

_REGION = {name: i for i, name in enumerate(REGIONS)}
_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate, anti-aliased edges
_SCALE = float(1 << _SHIFT)


@dataclass(frozen=True)
class PuppetIdentity:
    """Everything that makes one character look like itself; lengths are fractions of the image size."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_shade: tuple[int, int, int]
    iris: tuple[int, int, int]
    line: tuple[int, int, int]
    clothes: tuple[int, int, int]
    background: tuple[int, int, int]
    face_width: float
    face_height: float
    chin: float
    eye_width: float
    eye_height: float
    eye_spacing: float
    eye_y: float
    iris_ratio: float
    brow_gap: float
    brow_thickness: float
    brow_tilt: float
    mouth_width: float
    mouth_y: float
    fringe_spikes: int
    fringe_depth: float
    side_hair: float
    hair_volume: float
    blush: bool

    @classmethod
    def from_seed(cls, seed: int) -> PuppetIdentity:
        """The identity for ``seed``: the same seed always gives the same character."""
        rng = np.random.default_rng([0x9A11, seed])

        def hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
            r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
            return int(r * 255), int(g * 255), int(b * 255)

        hair_hue, hair_sat, hair_val = rng.random(), rng.uniform(0.25, 0.9), rng.uniform(0.3, 0.95)
        return cls(
            skin=hsv(rng.uniform(0.03, 0.08), rng.uniform(0.08, 0.3), rng.uniform(0.9, 1.0)),
            hair=hsv(hair_hue, hair_sat, hair_val),
            hair_shade=hsv(hair_hue, min(1.0, hair_sat * 1.1), hair_val * 0.72),
            iris=hsv(rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.45, 0.9)),
            line=hsv(hair_hue, 0.5, rng.uniform(0.1, 0.25)),
            clothes=hsv(rng.random(), rng.uniform(0.2, 0.8), rng.uniform(0.3, 0.9)),
            background=hsv(rng.random(), rng.uniform(0.05, 0.3), rng.uniform(0.75, 1.0)),
            face_width=rng.uniform(0.19, 0.25),
            face_height=rng.uniform(0.23, 0.28),
            chin=rng.uniform(0.0, 1.0),
            eye_width=rng.uniform(0.05, 0.07),
            eye_height=rng.uniform(0.045, 0.07),
            eye_spacing=rng.uniform(0.09, 0.115),
            eye_y=rng.uniform(0.0, 0.04),
            iris_ratio=rng.uniform(0.7, 0.95),
            brow_gap=rng.uniform(0.02, 0.04),
            brow_thickness=rng.uniform(0.008, 0.016),
            brow_tilt=rng.uniform(-0.012, 0.012),
            mouth_width=rng.uniform(0.022, 0.045),
            mouth_y=rng.uniform(0.13, 0.17),
            fringe_spikes=int(rng.integers(3, 8)),
            fringe_depth=rng.uniform(0.35, 0.6),
            side_hair=rng.uniform(0.05, 0.4),
            hair_volume=rng.uniform(1.05, 1.25),
            blush=bool(rng.random() < 0.5),
        )


@dataclass(frozen=True)
class PuppetFrame:
    """One rendered frame.

    Attributes:
        image: ``H×W×3`` uint8 RGB.
        regions: ``H×W`` uint8 region index into :data:`REGIONS`.
        keypoints: ``K×2`` float32 pixel coordinates (x, y) in :data:`KEYPOINT_NAMES` order.
    """

    image: np.ndarray
    regions: np.ndarray
    keypoints: np.ndarray


class _Pose:
    """Projects head-local points (units of image size, origin at the head centre) to pixels.

    For a fixed depth the projection is affine: ``pixels = points @ A.T + b(depth)``.
    """

    def __init__(self, params: np.ndarray, size: int, neck_y: float) -> None:
        angles = params[[PARAMETER_INDEX[k] for k in ("ParamAngleX", "ParamAngleY", "ParamAngleZ")]]
        yaw, pitch, roll = np.deg2rad(angles)
        rotation = np.array([[np.cos(roll), np.sin(roll)], [-np.sin(roll), np.cos(roll)]])
        self._matrix_t = (size * rotation @ np.diag([np.cos(yaw), np.cos(pitch)])).T
        self._depth_shift = np.array([np.sin(yaw), -np.sin(pitch)])
        self._rotation, self._size = rotation, size
        self._neck = np.array([0.0, neck_y])
        self._centre = np.array([0.5, 0.44])
        self._offsets: dict[float, np.ndarray] = {}

    def __call__(self, points: np.ndarray, depth: float) -> np.ndarray:
        """``N×2`` head-local points at ``depth`` → ``N×2`` float pixel coordinates."""
        offset = self._offsets.get(depth)
        if offset is None:
            offset = self._offsets[depth] = self._size * (self._rotation @ (depth * self._depth_shift - self._neck) + self._neck + self._centre)
        return points @ self._matrix_t + offset


class _Canvas:
    """An RGB image and its region map, drawn together (anti-aliased colour, hard-edged labels)."""

    def __init__(self, size: int, background: tuple[int, int, int]) -> None:
        self.image = np.empty((size, size, 3), np.uint8)
        self.image[:] = background
        self.regions = np.zeros((size, size), np.uint8)

    @staticmethod
    def _fixed(points: np.ndarray) -> list[np.ndarray]:
        return [(points * _SCALE).round().astype(np.int32)]

    def fill(self, points: np.ndarray, colour: tuple[int, int, int], region: str | None) -> None:
        cv2.fillPoly(self.image, self._fixed(points), colour, cv2.LINE_AA, _SHIFT)
        if region is not None:
            cv2.fillPoly(self.regions, self._fixed(points), _REGION[region], cv2.LINE_8, _SHIFT)

    def line(self, points: np.ndarray, colour: tuple[int, int, int], thickness: float, region: str | None) -> None:
        width = max(1, int(round(thickness)))
        cv2.polylines(self.image, self._fixed(points), False, colour, width, cv2.LINE_AA, _SHIFT)
        if region is not None:
            cv2.polylines(self.regions, self._fixed(points), False, _REGION[region], width, cv2.LINE_8, _SHIFT)

    def fill_clipped(self, clip: np.ndarray, shapes: list[tuple[np.ndarray, tuple[int, int, int]]]) -> None:
        """Fill ``shapes`` (polygon, colour) in order, visible only inside polygon ``clip`` (pixels)."""
        size = self.image.shape[0]
        x0, y0 = np.clip(np.floor(clip.min(0)).astype(int) - 1, 0, size)
        x1, y1 = np.clip(np.ceil(clip.max(0)).astype(int) + 2, 0, size)
        if x1 <= x0 or y1 <= y0:
            return
        offset = np.array([x0, y0], dtype=np.float64)
        patch = np.ascontiguousarray(self.image[y0:y1, x0:x1])
        layer = patch.copy()
        for polygon, colour in shapes:
            cv2.fillPoly(layer, self._fixed(polygon - offset), colour, cv2.LINE_AA, _SHIFT)
        alpha = np.zeros(patch.shape[:2], np.uint8)
        cv2.fillPoly(alpha, self._fixed(clip - offset), 255, cv2.LINE_AA, _SHIFT)
        a = alpha[..., None].astype(np.float32) / 255.0
        self.image[y0:y1, x0:x1] = (patch * (1.0 - a) + layer * a + 0.5).astype(np.uint8)


@lru_cache(maxsize=64)
def _unit_arc(n: int, start: float, end: float) -> np.ndarray:
    t = np.linspace(start, end, n, endpoint=end - start < 2 * np.pi - 1e-6)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 24, start: float = 0.0, end: float = 2 * np.pi) -> np.ndarray:
    return _unit_arc(n, start, end) * (rx, ry) + (cx, cy)


def _shade(colour: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class _Shapes:
    """An identity's pose-independent outlines in head-local units, computed once per identity."""

    back: np.ndarray
    sides: tuple[np.ndarray, np.ndarray]
    shoulders: np.ndarray
    neck: np.ndarray
    face: np.ndarray
    blush: tuple[np.ndarray, ...]
    eye_xs: np.ndarray
    eye_arc: np.ndarray
    fringe: np.ndarray
    brow_xs: np.ndarray
    brow_curve: tuple[np.ndarray, np.ndarray]
    mouth_xs: np.ndarray
    mouth_bend: np.ndarray


@lru_cache(maxsize=1024)
def _shapes(idn: PuppetIdentity) -> _Shapes:
    fw, fh, volume = idn.face_width, idn.face_height, idn.hair_volume
    sides = tuple(
        np.array([[s * fw * 0.75, -fh * 0.1], [s * fw * volume * 1.12, 0.0], [s * fw * 1.05, fh * 0.4 + idn.side_hair],
                  [s * fw * 0.65, fh * 0.25 + idn.side_hair * 0.8], [s * fw * 0.6, fh * 0.1]])
        for s in (-1.0, 1.0)
    )
    t = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
    lower = np.clip(np.sin(t), 0.0, None)
    face = np.stack([fw * np.cos(t) * (1.0 - (0.25 + 0.35 * idn.chin) * lower**2), fh * np.sin(t) * (1.0 + 0.08 * lower)], axis=1)
    blush = tuple(_ellipse(s * idn.eye_spacing * 1.1, idn.eye_y + idn.eye_height * 1.5, fw * 0.18, fh * 0.05, n=16) for s in (-1.0, 1.0)) if idn.blush else ()
    ew = idn.eye_width
    eye_xs = np.linspace(-ew, ew, 13)
    top = -fh * 1.05
    fringe_bottom = top + (idn.eye_y - idn.brow_gap - idn.eye_height - top) * idn.fringe_depth + fh * 0.35
    n = idn.fringe_spikes
    ys = np.where(np.arange(2 * n + 1) % 2 == 0, fringe_bottom - fh * 0.18, fringe_bottom)
    ys[[0, -1]] = fringe_bottom + fh * 0.25
    cap = _ellipse(0.0, -fh * 0.25, fw * volume, fh * 0.85, n=20, start=np.pi, end=2 * np.pi)
    brow_xs = np.linspace(-ew * 0.9, ew * 0.9, 7)
    mouth_xs = np.linspace(-idn.mouth_width, idn.mouth_width, 9)
    return _Shapes(
        back=_ellipse(0.0, -fh * 0.12, fw * volume * 1.08, fh * volume),
        sides=sides,  # type: ignore[arg-type]
        shoulders=_ellipse(0.0, 0.44 + fh * 0.95 + 0.3, 0.36, 0.26, n=32) + [0.5, 0.0],
        neck=np.array([[-0.055, fh * 0.6], [0.055, fh * 0.6], [0.06, fh * 1.25], [-0.06, fh * 1.25]]),
        face=face,
        blush=blush,
        eye_xs=eye_xs,
        eye_arc=np.sqrt(np.clip(1.0 - (eye_xs / ew) ** 2, 0.0, None)),
        fringe=np.vstack([np.stack([np.linspace(-fw * volume, fw * volume, 2 * n + 1), ys], axis=1), cap[::-1]]),
        brow_xs=brow_xs,
        brow_curve=tuple(-0.01 * (1.0 - (brow_xs / ew) ** 2) + side * idn.brow_tilt * brow_xs / ew for side in (1.0, -1.0)),  # type: ignore[arg-type]
        mouth_xs=mouth_xs,
        mouth_bend=1.0 - (mouth_xs / idn.mouth_width) ** 2,
    )


def render_puppet(identity: PuppetIdentity, params: np.ndarray, size: int) -> PuppetFrame:
    """Render ``identity`` posed by ``params``.

    Args:
        identity: the character.
        params: ``(P,)`` raw standard parameter values in ``PARAMETER_NAMES`` order (see
            :mod:`core.vocabulary`); values are clipped to their ranges.
        size: output height and width in pixels (any size ≥ 16).

    Returns:
        The frame: RGB image, region map and keypoints.
    """
    if size < 16:
        raise ValueError(f"puppet size must be at least 16 pixels, got {size}")
    params = np.asarray(params, dtype=np.float64)
    if params.shape != (len(PARAMETER_NAMES),):
        raise ValueError(f"expected {len(PARAMETER_NAMES)} parameters ({', '.join(PARAMETER_NAMES)}), got shape {params.shape}")
    low, high = parameter_bounds()
    params = np.clip(params, low, high)
    p = {name: float(params[i]) for name, i in PARAMETER_INDEX.items()}
    idn = identity
    pose = _Pose(params, size, neck_y=idn.face_height * 0.95)
    canvas = _Canvas(size, idn.background)
    px = size  # pixels per unit, for line widths

    shapes = _shapes(idn)
    # Back hair (moves against the face under yaw: it is behind the head) and body.
    canvas.fill(pose(shapes.back, -0.08), idn.hair_shade, "hair")
    canvas.fill(shapes.shoulders * size, idn.clothes, "body")
    canvas.fill(pose(shapes.neck, -0.02), _shade(idn.skin, 0.88), "body")
    for side in shapes.sides:
        canvas.fill(pose(side, -0.05), idn.hair_shade, "hair")

    # Face outline: a round top narrowing to a chin.
    face_px = pose(shapes.face, 0.02)
    canvas.fill(face_px, idn.skin, "face")
    canvas.line(np.vstack([face_px, face_px[:1]]), idn.line, px * 0.006, None)

    front = 0.12  # depth of the facial features
    for blush in shapes.blush:
        canvas.fill(pose(blush, front), (255, 150, 150), None)
    nose = pose(np.array([[0.0, idn.mouth_y * 0.45]]), front + 0.02)
    canvas.line(np.vstack([nose, nose + [px * 0.004, px * 0.006]]), _shade(idn.skin, 0.7), px * 0.006, None)

    # Mouth: corners lift with ParamMouthForm, the lower lip drops with ParamMouthOpenY.
    mw, my = idn.mouth_width, idn.mouth_y
    corner_y = my - p["ParamMouthForm"] * 0.014
    centre_y = my + p["ParamMouthForm"] * 0.008
    drop = p["ParamMouthOpenY"] * 0.055
    xs, bend = shapes.mouth_xs, shapes.mouth_bend
    upper = np.stack([xs, corner_y + (centre_y - corner_y) * bend], axis=1)
    if drop > 0.004:
        lower_lip = np.stack([xs[::-1], corner_y + (centre_y + drop - corner_y) * bend[::-1]], axis=1)
        mouth = pose(np.vstack([upper, lower_lip]), front)
        canvas.fill(mouth, (150, 40, 50), "mouth")
        if drop > 0.02:
            tongue = _ellipse(0.0, centre_y + drop * 0.75, mw * 0.5, drop * 0.3, n=12)
            canvas.fill_clipped(mouth, [(pose(tongue, front), (230, 110, 120))])
        canvas.line(mouth[: len(xs)], idn.line, px * 0.006, "mouth")
    else:
        canvas.line(pose(upper, front), idn.line, px * 0.008, "mouth")

    # Eyes: sclera lids scaled by openness, iris follows ParamEyeBallX/Y, clipped by the lids.
    keypoints: dict[str, np.ndarray] = {}
    ew, eh = idn.eye_width, idn.eye_height
    for side, name in ((1.0, "left"), (-1.0, "right")):
        ex, ey = side * idn.eye_spacing, idn.eye_y
        opening = p[f"ParamEye{name[0].upper()}Open"]
        xs, arc = shapes.eye_xs, shapes.eye_arc
        lid = np.stack([ex + xs, ey - eh * opening * arc * 1.1], axis=1)
        bottom = np.stack([ex + xs[::-1], ey + eh * opening * arc[::-1] * 0.8], axis=1)
        iris_c = np.array([ex + p["ParamEyeBallX"] * ew * 0.4, ey - p["ParamEyeBallY"] * eh * 0.35])
        keypoints[f"{name}_eye"] = pose(np.array([[ex, ey]]), front)[0]
        keypoints[f"{name}_iris"] = pose(iris_c[None], front)[0]
        if opening > 0.08:
            sclera = pose(np.vstack([lid, bottom]), front)
            canvas.fill(sclera, (252, 252, 255), f"{name}_eye")
            ir = eh * idn.iris_ratio
            canvas.fill_clipped(sclera, [
                (pose(_ellipse(*iris_c, ir * 0.78, ir, n=20), front), idn.iris),
                (pose(_ellipse(*iris_c, ir * 0.4, ir * 0.55, n=16), front), _shade(idn.iris, 0.45)),
                (pose(_ellipse(iris_c[0] - ir * 0.3, iris_c[1] - ir * 0.4, ir * 0.22, ir * 0.22, n=12), front), (255, 255, 255)),
            ])
            canvas.line(pose(lid, front), idn.line, px * 0.014, f"{name}_eye")
        else:
            closed = np.stack([ex + xs, ey + eh * 0.25 * arc], axis=1)
            canvas.line(pose(closed, front), idn.line, px * 0.012, f"{name}_eye")

    # Fringe: a cap over the head top with a jagged lower edge.
    canvas.fill(pose(shapes.fringe, 0.06), idn.hair, "hair")

    # Brows over the fringe, raised by ParamBrowLY/RY.
    for side, name, key, curve in ((1.0, "left", "ParamBrowLY", shapes.brow_curve[0]), (-1.0, "right", "ParamBrowRY", shapes.brow_curve[1])):
        by = idn.eye_y - eh - idn.brow_gap - p[key] * 0.025
        brow = np.stack([side * idn.eye_spacing + shapes.brow_xs, by + curve], axis=1)
        canvas.line(pose(brow, front), idn.line, px * idn.brow_thickness, f"{name}_brow")
        keypoints[f"{name}_brow"] = pose(np.array([[side * idn.eye_spacing, by - 0.01]]), front)[0]

    mouth_pts = pose(np.array([[-mw, corner_y], [mw, corner_y], [0.0, centre_y], [0.0, centre_y + drop]]), front)
    keypoints.update(mouth_right=mouth_pts[0], mouth_left=mouth_pts[1], mouth_top=mouth_pts[2], mouth_bottom=mouth_pts[3])
    keypoints["nose"] = nose[0]
    keypoints["chin"] = face_px[10]
    kps = np.stack([keypoints[name] for name in KEYPOINT_NAMES]).astype(np.float32)
    return PuppetFrame(image=canvas.image, regions=canvas.regions, keypoints=kps)


def sample_parameters(rng: np.random.Generator) -> np.ndarray:
    """A random pose ``(P,)`` float32: head turns, blinks, gaze, brows and talking mouth in natural proportions."""
    values = default_parameters()
    values[0:3] = np.clip(rng.normal(0.0, 12.0, 3), -30.0, 30.0)
    for key in ("ParamEyeLOpen", "ParamEyeROpen"):
        values[PARAMETER_INDEX[key]] = rng.uniform(0.0, 0.35) if rng.random() < 0.2 else rng.uniform(0.7, 1.0)
    if rng.random() < 0.7:  # eyes usually open together
        values[PARAMETER_INDEX["ParamEyeROpen"]] = values[PARAMETER_INDEX["ParamEyeLOpen"]]
    values[PARAMETER_INDEX["ParamEyeBallX"]] = rng.uniform(-1.0, 1.0)
    values[PARAMETER_INDEX["ParamEyeBallY"]] = rng.uniform(-1.0, 1.0)
    values[PARAMETER_INDEX["ParamBrowLY"]] = values[PARAMETER_INDEX["ParamBrowRY"]] = rng.uniform(-1.0, 1.0)
    values[PARAMETER_INDEX["ParamMouthOpenY"]] = 0.0 if rng.random() < 0.4 else rng.uniform(0.0, 1.0)
    values[PARAMETER_INDEX["ParamMouthForm"]] = rng.uniform(-1.0, 1.0)
    return values
