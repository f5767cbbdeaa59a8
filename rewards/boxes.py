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
import sys
from math import isfinite
from typing import Any, NamedTuple

import numpy as np

from rewards.parsing import loads_json, normalize_label

BOX_KEYS = ("bbox_2d", "bbox", "box")
LABEL_KEYS = ("label", "name", "category", "class")
SCORE_KEYS = ("score", "confidence", "conf")
NOTHING = {"none", "no objects", "no object", "nothing", "no", "null", "empty", "there are no objects", "n a"}

_FAST = (int, float)  # exact types (bool is not one of them)
_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_OBJECT = re.compile(r"\{[^{}]*\}")
_LIST4 = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")
_POINTS = re.compile(rf"\(\s*({_NUM})\s*,\s*({_NUM})\s*\)\s*(?:,\s*)?\(\s*({_NUM})\s*,\s*({_NUM})\s*\)")


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


# ------------------------------------------------------------------------------------- fast path
#
# A batch fast path for the shapes models write almost always: Qwen2.5-VL's JSON as ``json.dumps``
# writes it (``[{"bbox_2d": [x1, y1, x2, y2], "label": "dog"}]``, optionally with a ``"score"`` /
# ``"confidence"`` / ``"conf"`` last), bare ``[[x1, y1, x2, y2], ...]`` lists, one bare
# ``[x1, y1, x2, y2]`` and ``[]``. An answer is taken only when it is *exactly* that text: it is
# rebuilt from the pieces read out of it and compared with the original, every number must be a JSON
# number (checked by one regex over all of them), every label a JSON string without escapes or
# control characters. Anything else (other spacing, a code fence, escapes, other keys, NaN, ...) is
# left to :func:`parse_boxes`, so the fast path never changes a result; ``tests/rewards/
# test_detection_fastpath.py`` checks that on many generated and hostile answers.

# Number tokens are converted with float() and must be JSON numbers: within [0-9.eE+-] (so float()
# reads only decimal forms), no "+" but an exponent's, no ".5" / "5." / "5.e1", no leading zeros,
# never the integer "-0" (an int 0 in JSON, -0.0 for float()). An integer converts to the same float
# as its text (both correctly rounded); one too long for json.loads (int_max_str_digits) is left out.
_NOT_NUMBER_CHAR = re.compile(r"[^0-9.eE+\-,]")
_LEADING_ZERO = re.compile(r",-?0[0-9]")


def _too_long(answer: str, tokens: list[str]) -> bool:
    """Whether a token may be an integer too long for json.loads (``sys.get_int_max_str_digits``)."""
    limit = getattr(sys, "get_int_max_str_digits", lambda: 0)()
    return bool(limit) and len(answer) > limit and max(map(len, tokens)) > limit


def _json_numbers(joined: str) -> bool:
    """Whether ``joined`` (",tok,tok,...,") holds only JSON numbers, given that float() reads them all."""
    return not (
        _NOT_NUMBER_CHAR.search(joined)
        or joined.count("+") != joined.count("e+") + joined.count("E+")
        or ",." in joined
        or ",-." in joined
        or ".," in joined
        or ".e" in joined
        or ".E" in joined
        or ",-0," in joined
        or _LEADING_ZERO.search(joined)
    )


_SEPARATORS = str.maketrans({c: " " for c in '[]{}:,"'})
_CONTROL = re.compile(r"[\x00-\x1f\\]")
_SCORE_KEYS = frozenset(SCORE_KEYS)
_ENTRY_SCORED = '{": [%s, %s, %s, %s], ": ", ": %s}'  # an object with its strings cut out
_ENTRY_LABELLED = '{": [%s, %s, %s, %s], ": "}'
_ENTRY_BARE = "[%s, %s, %s, %s]"
_TEMPLATES: dict[tuple[str, int], str] = {}


def _template(entry: str, k: int) -> str:
    t = _TEMPLATES.get((entry, k))
    if t is None:
        t = _TEMPLATES[(entry, k)] = "[" + ", ".join([entry] * k) + "]"
    return t


def _fast_one(answer: str) -> tuple[list[str], list[str] | None, bool] | None:
    """(number tokens, labels or None, scored) of one answer in a fast-path shape, else None.

    The numbers still have to be checked to be JSON numbers (done for the whole batch at once).
    """
    if answer == "[]":
        return [], None, False
    if answer[:1] != "[" or answer[-1:] != "]":
        return None
    if answer[1:2] == "[" or '"' not in answer:  # bare lists
        tokens = answer.translate(_SEPARATORS).split()
        k, r = divmod(len(tokens), 4)
        if r or not k or _too_long(answer, tokens):
            return None
        if answer[1:2] == "[":
            template = _template(_ENTRY_BARE, k)
        elif k == 1:
            template = _ENTRY_BARE  # one bare [x1, y1, x2, y2]
        else:
            return None
        return (tokens, None, False) if template % tuple(tokens) == answer else None
    if answer[1:3] != '{"':
        return None
    pieces = answer.split('"')
    n = len(pieces) - 1
    if n % 8 == 0 and pieces[7] in _SCORE_KEYS:
        k, step, entry, scored = n // 8, 8, _ENTRY_SCORED, True
    elif n % 6 == 0:
        k, step, entry, scored = n // 6, 6, _ENTRY_LABELLED, False
    else:
        return None
    if pieces[1::step] != ["bbox_2d"] * k or pieces[3::step] != ["label"] * k:
        return None
    if scored and not _SCORE_KEYS.issuperset(pieces[7::step]):
        return None
    skeleton = '"'.join(pieces[0::2])  # the text outside the strings, each string cut to ""
    tokens = skeleton.translate(_SEPARATORS).split()
    if len(tokens) != k * (5 if scored else 4) or _template(entry, k) % tuple(tokens) != skeleton:
        return None
    if _too_long(answer, tokens):
        return None
    return tokens, pieces[5::step], scored


class FastBoxes(NamedTuple):
    """Boxes read by :func:`fast_parse` from the answers it took, flat and unprocessed.

    counts[i]: boxes in answer i, or -1 where the fast path did not take it (use :func:`parse_boxes`).
    coords [T, 4] and scores [T] (NaN where no confidence was written) as written, labels per box
    (None for bare lists), in the order written.
    """

    counts: list[int]
    coords: Any  # numpy float64 [T, 4]
    scores: Any  # numpy float64 [T]
    labels: list[str | None]


def _floats(tokens: list[str]) -> bool:
    """Whether every token is a JSON number that float() reads."""
    if not _json_numbers("," + ",".join(tokens) + ","):
        return False
    try:
        for t in tokens:
            float(t)
    except ValueError:
        return False
    return True


def fast_parse(answers: list[str | None]) -> FastBoxes:
    """Read the answers of the fast-path shapes at once (see above); the others get count -1."""
    counts: list[int] = [-1] * len(answers)
    items: list[int] = []  # answers taken, in order
    widths: list[int] = []  # 5 with confidences, else 4
    boxes: list[int] = []
    numbers: list[str] = []  # every number token of the answers taken, in order (flat: little for the GC)
    labels: list[str | None] = []  # one per box
    for i, answer in enumerate(answers):
        got = _fast_one(answer) if type(answer) is str else None
        if got is None:
            continue
        tokens, labs, scored = got
        width = 5 if scored else 4
        k = len(tokens) // width
        items.append(i)
        widths.append(width)
        boxes.append(k)
        numbers += tokens
        labels += labs if labs is not None else [None] * k
    values = None
    if not any(_CONTROL.search(lab) for lab in set(labels) if lab is not None) and _json_numbers(
        "," + ",".join(numbers) + ","
    ):
        try:
            values = np.fromiter(map(float, numbers), dtype=np.float64, count=len(numbers))
        except ValueError:
            pass
    if values is None:  # rare: some answer has a non-JSON number or a bad label; check one by one
        items, widths, boxes, numbers, labels = [], [], [], [], []
        for i, answer in enumerate(answers):
            got = _fast_one(answer) if type(answer) is str else None
            if got is None:
                continue
            tokens, labs, scored = got
            if labs is not None and any(_CONTROL.search(lab) for lab in labs):
                continue
            if not _floats(tokens):
                continue
            width = 5 if scored else 4
            items.append(i)
            widths.append(width)
            boxes.append(len(tokens) // width)
            numbers += tokens
            labels += labs if labs is not None else [None] * (len(tokens) // width)
        values = np.fromiter(map(float, numbers), dtype=np.float64, count=len(numbers))
    for i, k in zip(items, boxes):
        counts[i] = k
    k_arr = np.asarray(boxes, dtype=np.int64)
    w_arr = np.asarray(widths, dtype=np.int64)
    item_start = np.cumsum(k_arr * w_arr) - k_arr * w_arr  # offset of each answer's first number
    first_box = np.cumsum(k_arr) - k_arr
    total = int(k_arr.sum())
    box_w = np.repeat(w_arr, k_arr)  # [T]
    local = np.arange(total) - np.repeat(first_box, k_arr)
    start = np.repeat(item_start, k_arr) + local * box_w  # [T]: offset of each box's first number
    if not total:
        return FastBoxes(counts, np.zeros((0, 4)), np.zeros(0), labels)
    coords = values[start[:, None] + np.arange(4)]  # [T, 4]
    scores = np.where(box_w == 5, values[np.minimum(start + 4, len(values) - 1)], np.nan)  # [T]
    return FastBoxes(counts, coords, scores, labels)


def clean_boxes(coords: Any, scores: Any, w: Any, h: Any) -> tuple[Any, Any, Any, Any]:
    """:func:`make_box` on arrays: (xyxy [T, 4], confidence [T] (NaN = none), valid [T], fixed [T]).

    coords [T, 4] and scores [T] (NaN = not given) as written; w, h [T] the frame (inf when unknown).
    Invalid boxes (a non-finite coordinate) become all-zero without a confidence, like INVALID.
    """
    valid = np.isfinite(coords).all(axis=1)
    c = np.where(valid[:, None], coords, 0.0)
    x1, y1, x2, y2 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
    swap_x, swap_y = x1 > x2, y1 > y2
    x1, x2 = np.where(swap_x, x2, x1), np.where(swap_x, x1, x2)
    y1, y2 = np.where(swap_y, y2, y1), np.where(swap_y, y1, y2)
    low = (x1 < 0.0) | (y1 < 0.0)  # make_box clips all four at 0 then (a no-op on the others)
    x1, y1 = np.where(x1 < 0.0, 0.0, x1), np.where(y1 < 0.0, 0.0, y1)
    x2, y2 = np.where(x2 < 0.0, 0.0, x2), np.where(y2 < 0.0, 0.0, y2)
    high = (x2 > w) | (y2 > h)
    x1, x2 = np.where(x1 > w, w, x1), np.where(x2 > w, w, x2)
    y1, y2 = np.where(y1 > h, h, y1), np.where(y2 > h, h, y2)
    fixed = (swap_x | swap_y | low | high) & valid
    conf = np.where(scores < 0.0, 0.0, np.where(scores > 1.0, 1.0, scores))  # as make_box (-0.0 stays)
    conf = np.where(np.isfinite(scores) & valid, conf, np.nan)
    return np.stack([x1, y1, x2, y2], axis=1), conf, valid, fixed
