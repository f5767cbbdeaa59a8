"""``temporal_iou``: a predicted ``[start, end]`` in seconds against ``solution["segment"]``.

Applies to records whose solution has a ``segment`` (else None). The answer (tag rule of
:mod:`rewards.parsing`) is read as, in order: JSON ``[s, e]``, ``[[s, e]]`` or ``{"start": s, "end":
e}``; else exactly two times written in the text: ``12.5``, ``12.5s``, ``12.5 seconds``, ``1:02``
(m:ss = 62 s), ``1:02:03.5`` (h:mm:ss). So "12.5s to 17.8s", "12.5 - 17.8", "from 1:02 to 1:10" all
parse (the papers' parsers miss or misread these). A ``-`` is always a range dash, never a minus
sign. Fewer or more than two times, non-finite values: 0, counted as ``parse_fail`` / ``ambiguous``.

Reversed segments are reordered; both segments are clipped to ``[0, duration]`` when the solution
gives ``duration``. Score in [0, 1], batched on ``device``:

- ``variant="iou"`` (TimeZero, VideoChat-R1): the interval IoU;
- ``variant="iou_v2"`` (Time-R1): ``IoU * (1 - |s - s'| / D) * (1 - |e - e'| / D)`` with D the
  duration (when the solution has none, the later of the two ends);
- ``threshold``: when set, 1.0 if the score reaches it, else 0.0 (R1@threshold).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, get_args

import torch

from rewards.columns import completion_text, resolve_device, solutions
from rewards.geometry import interval_iou
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer, loads_json
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores

Variant = Literal["iou", "iou_v2"]
VARIANTS = get_args(Variant)
_TIME = re.compile(r"(?<![\w.:])(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d+)?)(?!\d|[.:]\d)")


def _finite(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer past 1e308
        return None
    return f if math.isfinite(f) else None


def parse_times(text: str) -> list[float]:
    """Every time written in ``text``, in seconds (``1:02`` -> 62.0, ``1:00:01.5`` -> 3601.5).

    Fields are read with float(), so any number of digits converts (to inf past 1e308), never raises.
    """
    out = []
    for m in _TIME.finditer(text):
        a, b, c = m.groups()
        parts = [p for p in (a, b) if p is not None]
        seconds = float(c)
        for k, p in enumerate(reversed(parts)):
            seconds += float(p) * 60.0 ** (k + 1)
        out.append(seconds)
    return out


def parse_segment(answer: str | None) -> tuple[tuple[float, float] | None, str]:
    """``((start, end), "")`` or ``(None, failure)``; never raises."""
    if answer is None:
        return None, "parse_fail"
    ok, value = loads_json(answer)
    if ok:
        if isinstance(value, dict):
            value = [value.get("start"), value.get("end")]
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
            value = value[0]
        if isinstance(value, list) and len(value) == 2:
            s, e = _finite(value[0]), _finite(value[1])
            if s is not None and e is not None:
                return (min(s, e), max(s, e)), ""
            return None, "parse_fail"
    times = parse_times(answer)
    if len(times) != 2:
        return None, "parse_fail" if len(times) < 2 else "ambiguous"
    s, e = times
    if not (math.isfinite(s) and math.isfinite(e)):
        return None, "parse_fail"
    return (min(s, e), max(s, e)), ""


@register_reward("temporal_iou")
def temporal_iou(
    completions: list,
    variant: Variant = "iou",
    threshold: Annotated[float, Range(0, 1)] | None = None,
    device: str | torch.device | None = None,
    **columns: Any,
) -> Scores:
    """Temporal IoU of the answered [start, end] seconds with ``solution["segment"]``, in [0, 1]."""
    check_arguments(temporal_iou, locals())
    n = len(completions)
    sols = solutions(columns, n)
    counter = MetricCounter("parse_fail", "ambiguous")
    out: list[float | None] = [None] * n
    idx, preds, gts, durations = [], [], [], []
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        seg = sol.get("segment")
        if seg is None:
            continue
        pair = list(seg) if isinstance(seg, (list, tuple)) and len(seg) == 2 else [None, None]
        gs, ge = _finite(pair[0]), _finite(pair[1])
        if gs is None or ge is None:
            ids = columns.get("id") or [None] * n
            raise ValueError(
                f"temporal_iou: record {ids[i]!r}: solution segment must be [start, end] seconds"
            )
        out[i] = 0.0
        pred, failure = parse_segment(extract_answer(completion_text(completion)).text)
        if pred is None:
            counter.add(failure)
            continue
        dur = _finite(sol.get("duration"))
        gt = (min(gs, ge), max(gs, ge))
        if dur is not None and dur > 0:
            pred = (min(max(pred[0], 0.0), dur), min(max(pred[1], 0.0), dur))
            gt = (min(max(gt[0], 0.0), dur), min(max(gt[1], 0.0), dur))
        idx.append(i)
        preds.append(pred)
        gts.append(gt)
        durations.append(dur if dur is not None and dur > 0 else max(pred[1], gt[1], 1e-9))
    if idx:
        dev = resolve_device(device)
        p = torch.tensor(preds, dtype=torch.float64, device=dev)  # [K, 2]
        g = torch.tensor(gts, dtype=torch.float64, device=dev)  # [K, 2]
        vals = interval_iou(p, g)  # [K]
        if variant == "iou_v2":
            d = torch.tensor(durations, dtype=torch.float64, device=dev)  # [K]
            vals = (
                vals
                * (1 - (p[:, 0] - g[:, 0]).abs() / d).clamp(min=0)
                * (1 - (p[:, 1] - g[:, 1]).abs() / d).clamp(min=0)
            )
        if threshold is not None:
            vals = (vals >= threshold).double()
        for i, v in zip(idx, vals.tolist()):
            out[i] = float(v)
    return counter.scores(out, columns, "temporal_iou")


temporal_iou.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
