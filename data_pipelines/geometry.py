"""Ground truth between frames: original image pixels <-> the frame the model sees.

Qwen2.5-VL answers in absolute pixels of the *resized* image (``coord_space="pixel"``); Qwen2-VL in
0-1000 of the image (``coord_space="norm1000"``); VideoChat-R1's tracking in 0-1 (``"norm1"``). Records hold original pixels; ``to_model_frame``
maps a solution into the model's frame and ``to_original_frame`` maps a (predicted) solution back,
so evaluation can report original coordinates. Times (seconds) are the same in both frames.
"""

from __future__ import annotations

import math
from typing import Any

COORD_SPACES = ("pixel", "norm1000", "norm1")
_NORM = {"norm1000": 1000.0, "norm1": 1.0}

# Solution keys that hold one box / a list of boxes, for any task.
_BOX_KEYS = ("box",)
_BOXES_KEYS = ("boxes",)


def box_to_model(
    box: list[float], scale: tuple[float, float], size: tuple[int, int], coord_space: str
) -> list[float]:
    """One xyxy box from original pixels to the model frame.

    scale: (sx, sy) with model_x = original_x * sx; size: (width, height) of the ORIGINAL image.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    if coord_space == "pixel":
        sx, sy = scale
        return [x1 * sx, y1 * sy, x2 * sx, y2 * sy]
    if coord_space in _NORM:
        w, h, k = size[0], size[1], _NORM[coord_space]
        return [x1 * k / w, y1 * k / h, x2 * k / w, y2 * k / h]
    raise ValueError(f"coord_space must be one of {COORD_SPACES}, got {coord_space!r}")


def box_to_original(
    box: list[float], scale: tuple[float, float], size: tuple[int, int], coord_space: str
) -> list[float]:
    """Inverse of ``box_to_model``: a model-frame xyxy box back to original pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if coord_space == "pixel":
        sx, sy = scale
        return [x1 / sx, y1 / sy, x2 / sx, y2 / sy]
    if coord_space in _NORM:
        w, h, k = size[0], size[1], _NORM[coord_space]
        return [x1 * w / k, y1 * h / k, x2 * w / k, y2 * h / k]
    raise ValueError(f"coord_space must be one of {COORD_SPACES}, got {coord_space!r}")


def _map_solution(solution: dict[str, Any], fn, scale, size, coord_space) -> dict[str, Any]:
    out = dict(solution)
    for key in _BOX_KEYS:
        if out.get(key) is not None:
            out[key] = fn(out[key], scale, size, coord_space)
    for key in _BOXES_KEYS:
        if out.get(key) is not None:
            out[key] = [None if b is None else fn(b, scale, size, coord_space) for b in out[key]]
    return out


def to_model_frame(
    solution: dict[str, Any], scale: tuple[float, float], size: tuple[int, int], coord_space: str = "pixel"
) -> dict[str, Any]:
    """Copy of ``solution`` with ``box`` / ``boxes`` mapped into the model frame; other keys unchanged
    (``None`` entries of ``boxes``, a tracked object out of view, stay None).

    scale: (sx, sy) of the image the boxes refer to (the first image; for video, every frame);
    size: (width, height) of the original image or frame.
    """
    return _map_solution(solution, box_to_model, scale, size, coord_space)


def to_original_frame(
    solution: dict[str, Any], scale: tuple[float, float], size: tuple[int, int], coord_space: str = "pixel"
) -> dict[str, Any]:
    """Inverse of ``to_model_frame``: model-frame ``box`` / ``boxes`` back to original pixels."""
    return _map_solution(solution, box_to_original, scale, size, coord_space)


def is_finite_number(v: Any) -> bool:
    """Whether ``v`` is an int or float (not a bool) with a finite float value (no NaN, inf, 1e400)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an integer past the float range
        return False


# What each check_box reason means, for messages.
BOX_PROBLEMS = {
    "bad_box": "is not four numbers [x1, y1, x2, y2]",
    "non_finite": "has a NaN or infinite coordinate",
    "box_reversed": "needs x1 < x2 and y1 < y2",
    "box_outside_image": "lies outside the image",
}


def check_box(box: Any, size: tuple[int, int] | None, tol: float = 1.0) -> str | None:
    """Why ``box`` is not a valid xyxy box inside an image of ``size`` (w, h), or None when it is.

    Returns a reason code (:data:`BOX_PROBLEMS` says what each means): ``bad_box`` (not four numbers),
    ``non_finite`` (NaN, inf, or an integer past the float range), ``box_reversed`` (x2 <= x1 or
    y2 <= y1), ``box_outside_image`` (beyond the image by more than ``tol`` pixels).
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        return "bad_box"
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
        return "bad_box"
    if not all(is_finite_number(v) for v in box):
        return "non_finite"
    x1, y1, x2, y2 = box
    if x2 <= x1 or y2 <= y1:
        return "box_reversed"
    if size is not None:
        w, h = size
        if x1 < -tol or y1 < -tol or x2 > w + tol or y2 > h + tol:
            return "box_outside_image"
    return None


def xywh_to_xyxy(bbox: Any) -> Any:
    """COCO's ``[x, y, w, h]`` as ``[x1, y1, x2, y2]``; anything that is not 4 finite numbers is
    returned as it is, for :func:`check_box` to name (``bad_box`` / ``non_finite``)."""
    if not (isinstance(bbox, (list, tuple)) and len(bbox) == 4 and all(is_finite_number(v) for v in bbox)):
        return bbox
    x, y, w, h = bbox
    return [x, y, x + w, y + h]


def clip_box(box: list[float], size: tuple[int, int]) -> list[float]:
    """Clip an xyxy box to [0, w] x [0, h] (absorbs the sub-pixel overhang ``check_box`` tolerates)."""
    w, h = size
    x1, y1, x2, y2 = box
    return [min(max(x1, 0.0), w), min(max(y1, 0.0), h), min(max(x2, 0.0), w), min(max(y2, 0.0), h)]
