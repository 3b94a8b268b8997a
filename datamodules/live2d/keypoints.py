"""2-D keypoints of a posed Live2D model from its deformed meshes, in :data:`~core.vocabulary.KEYPOINT_NAMES`
order, so Live2D clips and the puppet carry the same keypoints.

Eye, iris, brow and nose points are the mean of their drawables' bounding-box centres (each drawable counts
once, however dense its mesh); the mouth's four points are the middles of the sides of the mouth drawables'
bounding box; the chin
is the lowest face-skin vertex within the mouth's width. Meshes include hidden parts (a closed eye's iris), so
points do not jump when something is covered. Where a model has no drawable of a kind the point falls back
(iris → eye centre, brow → above the eye by a third of the eye-to-mouth distance, nose → between eyes and
mouth, chin → below the mouth).
"""

from __future__ import annotations

import numpy as np

from core.vocabulary import KEYPOINT_NAMES


def _centre(meshes: list[np.ndarray]) -> np.ndarray | None:
    if not meshes:
        return None
    return np.mean([(m.min(0) + m.max(0)) / 2 for m in meshes], axis=0)


def rig_keypoints(vertices: list[np.ndarray], regions: list[str], kinds: list[str]) -> np.ndarray:
    """Keypoints of one frame.

    Args:
        vertices: per drawable, its ``V×2`` vertices in pixels (x right, y down); empty for drawables to skip.
        regions: per drawable, its region name (``left_eye``, ``mouth``, …).
        kinds: per drawable, its kind (``eye``, ``iris``, ``nose``, …).

    Returns:
        ``K×2`` float32 pixel coordinates in :data:`~core.vocabulary.KEYPOINT_NAMES` order.

    Raises:
        ValueError: the model has no eye, brow or mouth drawables to place the points on.
    """

    def meshes(region: str | None = None, kind: str | None = None) -> list[np.ndarray]:
        return [v for v, r, k in zip(vertices, regions, kinds) if len(v) and (region is None or r == region) and (kind is None or k == kind)]

    points: dict[str, np.ndarray | None] = {}
    for side in ("left", "right"):
        points[f"{side}_eye"] = _centre(meshes(f"{side}_eye", "eye")) if meshes(f"{side}_eye", "eye") else _centre(meshes(f"{side}_eye"))
        points[f"{side}_iris"] = _centre(meshes(f"{side}_eye", "iris")) if meshes(f"{side}_eye", "iris") else points[f"{side}_eye"]
    mouth = meshes("mouth")
    missing = [name for name, point in points.items() if point is None] + ([] if mouth else ["mouth"])
    if missing:
        raise ValueError(f"no drawables for {', '.join(missing)}; add region overrides for this model")
    mouth_points = np.concatenate(mouth)
    (x0, y0), (x1, y1) = mouth_points.min(0), mouth_points.max(0)
    mouth_centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    points["mouth_left"] = np.array([x1, mouth_centre[1]])  # the character's left is the image's right
    points["mouth_right"] = np.array([x0, mouth_centre[1]])
    points["mouth_top"] = np.array([mouth_centre[0], y0])
    points["mouth_bottom"] = np.array([mouth_centre[0], y1])
    eyes_centre = (points["left_eye"] + points["right_eye"]) / 2  # type: ignore[operator]
    for side in ("left", "right"):
        brow = _centre(meshes(f"{side}_brow"))
        points[f"{side}_brow"] = brow if brow is not None else points[f"{side}_eye"] + (eyes_centre - mouth_centre) / 3
    nose = _centre(meshes(kind="nose"))
    points["nose"] = nose if nose is not None else (eyes_centre + mouth_centre) / 2
    skin = meshes(kind="face")
    skin_points = np.concatenate(skin) if skin else np.zeros((0, 2))
    half_width = max(mouth_points[:, 0].max() - mouth_centre[0], 1.0)
    below = skin_points[(np.abs(skin_points[:, 0] - mouth_centre[0]) <= half_width) & (skin_points[:, 1] > mouth_centre[1])]
    points["chin"] = below[below[:, 1].argmax()] if len(below) else mouth_centre + [0.0, mouth_centre[1] - eyes_centre[1]]
    return np.stack([points[name] for name in KEYPOINT_NAMES]).astype(np.float32)
