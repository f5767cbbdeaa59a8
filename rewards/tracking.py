"""``tracking``: one box per sampled frame against ``solution["boxes"]`` (VideoChat-R1's tracking task).

Applies to tracking records: ``task == "tracking"``, or, without a ``task`` column, a solution with
``boxes`` and no ``labels``. ``solution["boxes"]`` holds one box per sampled frame (``null`` where the
object is not visible). Boxes are in the record's frame: pixels, 0-1000 (``coord_space="norm1000"``)
or VideoChat-R1's normalised 0-1 (``coord_space="norm1"``); they are clipped to it.

The answer (tag rule of :mod:`rewards.parsing`) is a JSON list with one entry per frame: ``[x1, y1,
x2, y2]``, ``{"bbox_2d": [...]}`` or ``null``; or a list of ``{"frame": k, "bbox_2d": [...]}``
(k 0-based); or, failing JSON, the boxes written in the text in frame order. More entries than
``max_frames`` is a parse failure.

Score: for each of ``T = max(T_pred, T_gt)`` frames, the box IoU (both absent: 1.0; one absent, or a
malformed box: 0.0), averaged over T, so missing and extra frames cost the same. Range [0, 1]; IoU
pairs are computed in one batch on ``device``.
"""

from __future__ import annotations

from typing import Annotated, Any

import torch

from rewards.boxes import BOX_KEYS, INVALID, Box, gt_box, make_box, parse_boxes
from rewards.columns import column, completion_text, frame_size, resolve_device, solutions
from rewards.geometry import paired_iou
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer, loads_json
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores


def is_tracking_record(solution: dict[str, Any], task: Any) -> bool:
    """Whether ``tracking`` applies (see module doc)."""
    if solution.get("boxes") is None:
        return False
    return task == "tracking" if task is not None else solution.get("labels") is None


def parse_track(
    answer: str | None, frame: tuple[float, float] | None, max_frames: int = 512
) -> list[Box | None] | None:
    """Per-frame boxes (None = absent, INVALID = malformed), or None on a parse failure."""
    if answer is None:
        return None
    ok, value = loads_json(answer)
    if ok and isinstance(value, dict) and isinstance(value.get("boxes"), list):
        value = value["boxes"]
    if ok and isinstance(value, list) and value and not all(isinstance(v, (int, float)) for v in value):
        if len(value) > max_frames:
            return None
        if all(isinstance(v, dict) and "frame" in v for v in value):
            track: list[Box | None] = [None] * max_frames
            last = -1
            for v in value:
                k = v["frame"]
                if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < max_frames:
                    return None
                track[k] = make_box(next((v[key] for key in BOX_KEYS if key in v), None), frame)[0]
                last = max(last, k)
            return track[: last + 1]
        out: list[Box | None] = []
        for v in value:
            if v is None:
                out.append(None)
            elif isinstance(v, dict):
                out.append(make_box(next((v[key] for key in BOX_KEYS if key in v), None), frame)[0])
            else:
                out.append(make_box(v, frame)[0])
        return out
    parsed = parse_boxes(answer, frame, max_boxes=max_frames)
    return list(parsed.boxes) if parsed.ok and parsed.boxes else None


@register_reward("tracking")
def tracking(
    completions: list,
    max_frames: Annotated[int, Range(1, 100_000)] = 512,
    device: str | torch.device | None = None,
    **columns: Any,
) -> Scores:
    """Tracking: per-frame box IoU averaged over max(T_pred, T_gt) frames, in [0, 1]."""
    check_arguments(tracking, locals())
    n = len(completions)
    sols = solutions(columns, n)
    tasks, spaces, sizes, ids = (column(columns, k, n) for k in ("task", "coord_space", "image_size", "id"))
    counter = MetricCounter("parse_fail", "frame_count_mismatch", "invalid_box")
    out: list[float | None] = [None] * n
    pair_owner, preds, gts = [], [], []
    totals: dict[int, float] = {}
    lengths: dict[int, int] = {}
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        if not is_tracking_record(sol, tasks[i]):
            continue
        frame = frame_size(spaces[i], sizes[i])
        if not isinstance(sol["boxes"], (list, tuple)):
            raise ValueError(
                f"tracking: record {ids[i]!r}: solution boxes must be a list, one box or null per frame"
            )
        gt_track = []
        for t, b in enumerate(sol["boxes"]):
            g = None if b is None else gt_box(b, frame)
            if b is not None and g is None:
                raise ValueError(
                    f"tracking: record {ids[i]!r}: solution box {t} must be 4 finite numbers or null"
                )
            gt_track.append(g)
        out[i] = 0.0
        track = parse_track(extract_answer(completion_text(completion)).text, frame, max_frames)
        if track is None:
            counter.add("parse_fail")
            continue
        counter.add("frame_count_mismatch", len(track) != len(gt_track))
        lengths[i] = max(len(track), len(gt_track), 1)
        totals[i] = 0.0
        for t in range(min(len(track), len(gt_track))):
            p, g = track[t], gt_track[t]
            if p is None and g is None:
                totals[i] += 1.0
            elif p is not None and g is not None and p is not INVALID:
                pair_owner.append(i)
                preds.append((p.x1, p.y1, p.x2, p.y2))
                gts.append((g.x1, g.y1, g.x2, g.y2))
            counter.add("invalid_box", p is INVALID)
    if pair_owner:
        dev = resolve_device(device)
        vals = paired_iou(
            torch.tensor(preds, dtype=torch.float64, device=dev),
            torch.tensor(gts, dtype=torch.float64, device=dev),
        )  # [K]
        owner = torch.tensor(pair_owner, dtype=torch.long, device=dev)  # [K]
        sums = torch.zeros(n, dtype=torch.float64, device=dev).index_add_(0, owner, vals)  # [n]
        for i, v in enumerate(sums.tolist()):
            if i in totals:
                totals[i] += v
    for i, total in totals.items():
        out[i] = min(1.0, total / lengths[i])
    return counter.scores(out, columns, "tracking")


tracking.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
