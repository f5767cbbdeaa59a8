"""``point_in_box``: a worked reward plugin -- does the answered point land in the target's box?

Pointing is the cheapest grounding answer ("click on the red car"): the model writes one point and
the reward checks it against ``solution["box"]`` (the same ground truth the ``iou`` reward reads).
This file is the example the plugin guide (docs/rewards.md) walks through; copy it to start your own.

- Applies to records whose solution has a ``box`` (None elsewhere, so it mixes with other tasks).
- Answer forms: ``{"point_2d": [x, y]}`` (Qwen2.5-VL's pointing JSON), ``[x, y]``, ``(x, y)``; read
  from the answer only (:func:`rewards.parsing.extract_answer`), never from the reasoning. Anything
  else, two different points, or a non-finite coordinate scores 0 and counts as ``parse_fail``.
- Score: 1.0 inside the box (edges included). Outside, ``falloff`` > 0 gives partial credit
  ``max(0, 1 - d / (falloff * diag))`` with d the distance to the box and diag its diagonal; the
  default ``falloff=0`` scores 0 outside.
- Geometry is batched: one tensor op for the whole batch, on ``device``.

Use it in a config::

    rewards:
      - name: rewards.examples.point_in_box:point_in_box
        weight: 1.0
        params: {falloff: 0.5}
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

import torch

from rewards.columns import completion_text, resolve_device, solutions
from rewards.params import Range
from rewards.parsing import extract_answer, loads_json
from rewards.result import MetricCounter, Scores

_NUM = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_PAIR = re.compile(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]")


def parse_point(answer: str | None) -> tuple[float, float] | None:
    """The single point an answer gives, or None. Never raises."""
    if answer is None:
        return None
    ok, value = loads_json(answer)
    if ok and isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if ok and isinstance(value, dict):
        value = value.get("point_2d", value.get("point"))
    if ok and isinstance(value, list) and len(value) == 2:
        points = [tuple(value)]
    else:
        points = list(dict.fromkeys((float(a), float(b)) for a, b in _PAIR.findall(answer)))
    if len(points) != 1:
        return None
    x, y = points[0]
    if (
        isinstance(x, bool)
        or isinstance(y, bool)
        or not isinstance(x, (int, float))
        or not isinstance(y, (int, float))
    ):
        return None
    try:
        x, y = float(x), float(y)
    except OverflowError:  # a JSON integer past 1e308
        return None
    return (x, y) if math.isfinite(x) and math.isfinite(y) else None


def point_in_box(
    completions: list,
    falloff: Annotated[float, Range(0)] = 0.0,  # checked at config load: `falloff: -1` is an error
    device: str | torch.device | None = None,
    **columns: Any,
) -> Scores:
    """Point in box: 1.0 when the answered point lies in ``solution["box"]`` (optional distance falloff)."""
    n = len(completions)
    sols = solutions(columns, n)
    counter = MetricCounter("parse_fail")
    out: list[float | None] = [None] * n
    idx, points, boxes = [], [], []
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        box = sol.get("box")
        if box is None:
            continue
        out[i] = 0.0
        point = parse_point(extract_answer(completion_text(completion)).text)
        if point is None:
            counter.add("parse_fail")
            continue
        idx.append(i)
        points.append(point)
        x1, y1, x2, y2 = (float(v) for v in box)
        boxes.append((min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)))
    if idx:
        dev = resolve_device(device)
        p = torch.tensor(points, dtype=torch.float64, device=dev)  # [K, 2]
        b = torch.tensor(boxes, dtype=torch.float64, device=dev)  # [K, 4]
        # distance from the point to the box: 0 inside
        dx = (b[:, 0] - p[:, 0]).clamp(min=0) + (p[:, 0] - b[:, 2]).clamp(min=0)  # [K]
        dy = (b[:, 1] - p[:, 1]).clamp(min=0) + (p[:, 1] - b[:, 3]).clamp(min=0)  # [K]
        dist = torch.sqrt(dx**2 + dy**2)  # [K]
        if falloff > 0:
            diag = torch.sqrt((b[:, 2] - b[:, 0]) ** 2 + (b[:, 3] - b[:, 1]) ** 2).clamp(min=1e-9)  # [K]
            vals = (1 - dist / (falloff * diag)).clamp(min=0)
        else:
            vals = (dist == 0).double()
        for i, v in zip(idx, vals.tolist()):
            out[i] = float(v)
    return counter.scores(out, columns, "point_in_box")
