"""Parsing boxes out of an answer, forgivingly and deterministically. Never raises on model output.

Accepted forms (in this order of preference):

1. JSON (optionally in a code fence): Qwen2.5-VL's native ``[{"bbox_2d": [x1, y1, x2, y2], "label": "dog"}]``,
   a single such object, a bare ``[x1, y1, x2, y2]``, a list of them, ``[]`` / ``null`` for no objects.
   Keys ``bbox_2d``, ``bbox``, ``box``; labels under ``label`` / ``name`` / ``category``; confidences
   under ``score`` / ``confidence`` / ``conf``.
2. Otherwise each ``{...}`` object found in the text (a truncated list still yields its complete
   objects), then bracketed 4-number lists ``[x1, y1, x2, y2]``, then Qwen2-VL's ``(x1,y1),(x2,y2)``.
3. Otherwise an answer that says there is nothing (``none``, ``no objects``, ...) is zero boxes.
   Anything else is a parse failure.

Coordinates are read as they are written, in the record's frame (pixels of the resized image, or
0-1000 for ``coord_space="norm1000"``); nothing is rescaled. Per box, deterministically:

- reversed corners are reordered (x1 > x2 swaps), and counted as ``fixed``;
- coordinates are clipped into the frame ``[0, W] x [0, H]`` when the frame is known (else below at 0);
  a box entirely outside the image becomes a zero-area box, which overlaps nothing;
- a box with a non-finite coordinate (NaN, inf), the wrong number of coordinates, or non-numbers is
  *invalid*: it is kept as a prediction that matches nothing (so junk is never free), counted as
  ``invalid``;
- confidences are clamped to [0, 1] (non-finite ones are dropped).
"""

from __future__ import annotations

import math
import re
from math import isfinite
from typing import Any, NamedTuple

from rewards.parsing import loads_json, normalize_label

BOX_KEYS = ("bbox_2d", "bbox", "box")
LABEL_KEYS = ("label", "name", "category", "class")
SCORE_KEYS = ("score", "confidence", "conf")
NOTHING = {"none", "no objects", "no object", "nothing", "no", "null", "empty", "there are no objects", "n a"}

_FAST = (int, float)  # exact types (bool is not one of them)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_OBJECT = re.compile(r"\{[^{}]*\}")
_LIST4 = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_POINTS = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*,?\s*\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")


class Box(NamedTuple):
    """One predicted box in xyxy, its normalised label (or None) and confidence (or None).

    ``valid`` is False for a malformed entry: it counts as a prediction but overlaps nothing.
    """

    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None = None
    score: float | None = None
    valid: bool = True


INVALID = Box(0.0, 0.0, 0.0, 0.0, None, None, False)


class ParsedBoxes(NamedTuple):
    """Boxes read from one answer. ``ok`` False (with ``failure``) when no box list could be read."""

    boxes: list[Box]
    ok: bool
    failure: str = ""
    fixed: int = 0
    invalid: int = 0


def _number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        try:
            f = float(v)
        except OverflowError:
            return None
        return f if math.isfinite(f) else None
    if isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def make_box(
    coords: Any, frame: tuple[float, float] | None, label: Any = None, score: Any = None
) -> tuple[Box, bool]:
    """A :class:`Box` from 4 coordinates, reordered and clipped; ``(box, fixed)``. Invalid -> INVALID."""
    if not isinstance(coords, (list, tuple)) or len(coords) != 4:
        return INVALID, False
    a, b, c, d = coords
    if type(a) in _FAST and type(b) in _FAST and type(c) in _FAST and type(d) in _FAST:  # the hot path
        try:
            x1, y1, x2, y2 = float(a), float(b), float(c), float(d)
        except OverflowError:  # an integer too large for a float
            return INVALID, False
        if not (isfinite(x1) and isfinite(y1) and isfinite(x2) and isfinite(y2)):
            return INVALID, False
    else:
        nums = [_number(v) for v in coords]
        if None in nums:
            return INVALID, False
        x1, y1, x2, y2 = nums  # type: ignore[misc]
    fixed = False
    if x1 > x2:
        x1, x2, fixed = x2, x1, True
    if y1 > y2:
        y1, y2, fixed = y2, y1, True
    if x1 < 0.0 or y1 < 0.0:
        x1, y1, x2, y2, fixed = max(x1, 0.0), max(y1, 0.0), max(x2, 0.0), max(y2, 0.0), True
    if frame is not None:
        w, h = frame
        if x2 > w or y2 > h:
            x1, y1, x2, y2, fixed = min(x1, w), min(y1, h), min(x2, w), min(y2, h), True
    if type(label) is str:
        lab = normalize_label(label) or None
    elif type(label) is int:
        lab = str(label)
    else:
        lab = None
    if score is None:
        conf = None
    elif type(score) is float and isfinite(score):
        conf = score
    else:
        conf = _number(score)
    if conf is not None:
        conf = 0.0 if conf < 0.0 else 1.0 if conf > 1.0 else conf
    return Box(x1, y1, x2, y2, lab, conf, True), fixed


def _first(d: dict, keys: tuple[str, ...]) -> Any:
    for k in keys:
        if k in d:
            return d[k]
    return None


def _entries(value: Any, limit: int) -> list[tuple[Any, Any, Any]] | None:
    """(coords, label, score) entries of a parsed JSON value, or None if it is not a box list."""
    if value is None:
        return []
    if isinstance(value, dict):
        if any(k in value for k in BOX_KEYS):
            return [_dict_entry(value)]
        for k in ("boxes", "objects", "detections"):
            if isinstance(value.get(k), list):
                return _entries(value[k], limit)
        return None
    if not isinstance(value, list):
        return None
    if value and all(not isinstance(c, (list, tuple, dict)) for c in value):
        return [(value, None, None)]  # one coordinate list (invalid unless 4 numbers)
    out = []
    for item in value[: limit + 1]:
        if isinstance(item, dict):
            out.append(_dict_entry(item))
        else:  # a bare coordinate list, or junk that counts as an invalid box
            out.append((item, None, None))
    return out


def _dict_entry(item: dict) -> tuple[Any, Any, Any]:
    """(coords, label, score) of one object; Qwen's own keys first (the common case), then synonyms."""
    coords = item["bbox_2d"] if "bbox_2d" in item else _first(item, BOX_KEYS)
    label = item["label"] if "label" in item else _first(item, LABEL_KEYS)
    score = item["score"] if "score" in item else _first(item, SCORE_KEYS)
    return coords, label, score


def _text_entries(text: str, limit: int) -> list[tuple[Any, Any, Any]]:
    out: list[tuple[Any, Any, Any]] = []
    for m in _OBJECT.finditer(text):
        ok, obj = loads_json(m.group(0))
        if not ok:
            ok, obj = loads_json(m.group(0).replace("'", '"'))
        if ok and isinstance(obj, dict) and any(k in obj for k in BOX_KEYS):
            out.append((_first(obj, BOX_KEYS), _first(obj, LABEL_KEYS), _first(obj, SCORE_KEYS)))
            if len(out) > limit:
                return out
    if out:
        return out
    for pattern in (_LIST4, _POINTS):
        for m in pattern.finditer(text):
            out.append((list(m.groups()), None, None))
            if len(out) > limit:
                return out
        if out:
            return out
    return out


def parse_boxes(
    answer: str | None, frame: tuple[float, float] | None = None, max_boxes: int = 100
) -> ParsedBoxes:
    """Every box in ``answer`` (see the module doc); more than ``max_boxes`` is a failure."""
    if answer is None:
        return ParsedBoxes([], False, "no_answer")
    ok, value = loads_json(answer)
    entries = _entries(value, max_boxes) if ok else None
    if entries is None:
        entries = _text_entries(answer, max_boxes)
        if not entries:
            if normalize_label(answer) in NOTHING:
                return ParsedBoxes([], True)
            return ParsedBoxes([], False, "no_boxes")
    if len(entries) > max_boxes:
        return ParsedBoxes([], False, "too_many_boxes")
    boxes, n_fixed, n_invalid = [], 0, 0
    for coords, label, score in entries:
        box, fixed = make_box(coords, frame, label, score)
        boxes.append(box)
        n_fixed += fixed
        n_invalid += not box.valid
    return ParsedBoxes(boxes, True, "", n_fixed, n_invalid)


def gt_box(value: Any, frame: tuple[float, float] | None = None) -> Box | None:
    """A ground-truth box (trusted input, but reordered/clipped like predictions); None if malformed."""
    box, _ = make_box(value, frame)
    return box if box.valid else None
