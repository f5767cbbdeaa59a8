"""``iou``: one predicted box against ``solution["box"]`` (referring-expression grounding).

Applies to records whose solution has a ``box`` (else None). Both boxes are in the record's frame
(pixels of the resized image for ``coord_space="pixel"``, 0-1000 for ``"norm1000"``); the answer is
parsed by :mod:`rewards.boxes` (Qwen2.5-VL JSON, bare list, Qwen2-VL ``(x1,y1),(x2,y2)``), reversed
corners reordered, coordinates clipped to ``image_size`` (or to 1000 for norm1000).

Score, in [0, 1]:

- ``variant="iou"`` (default): the continuous IoU;
- ``variant="giou"``: ``(GIoU + 1) / 2``, which still rewards a non-overlapping box for moving closer;
- ``threshold``: when set, 1.0 if the (G)IoU reaches it, else 0.0.

Exactly one box is expected: an answer with several different boxes scores 0 (``multiple_boxes``; it
would otherwise be a way to hedge), repeated identical boxes count once. No box, a malformed box
(NaN, three numbers) or a parse failure scores 0 and is counted.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import torch

from rewards.boxes import gt_box, parse_boxes
from rewards.columns import column, completion_text, frame_size, resolve_device, solutions
from rewards.geometry import paired_iou
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores

Variant = Literal["iou", "giou"]
VARIANTS = get_args(Variant)


@register_reward("iou")
def iou(
    completions: list,
    variant: Variant = "iou",
    threshold: Annotated[float, Range(0, 1)] | None = None,
    device: str | torch.device | None = None,
    **columns: Any,
) -> Scores:
    """IoU of the single predicted box with ``solution["box"]``, in [0, 1] (GIoU rescaled as an option)."""
    check_arguments(iou, locals())
    n = len(completions)
    sols = solutions(columns, n)
    spaces = column(columns, "coord_space", n)
    sizes = column(columns, "image_size", n)
    counter = MetricCounter("parse_fail", "no_box", "multiple_boxes", "invalid_box", "fixed_box")
    out: list[float | None] = [None] * n
    idx, preds, gts = [], [], []
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        if sol.get("box") is None:
            continue
        frame = frame_size(spaces[i], sizes[i])
        gt = gt_box(sol["box"], frame)
        if gt is None:
            raise ValueError(
                f"iou: record {column(columns, 'id', n)[i]!r}: solution box must be 4 finite numbers"
            )
        out[i] = 0.0
        answer = extract_answer(completion_text(completion))
        parsed = parse_boxes(answer.text, frame, max_boxes=16)
        if not parsed.ok:
            counter.add("parse_fail")
            continue
        unique = list(dict.fromkeys((b.x1, b.y1, b.x2, b.y2, b.valid) for b in parsed.boxes))
        if not unique:
            counter.add("no_box")
            continue
        if len(unique) > 1:
            counter.add("multiple_boxes")
            continue
        if not unique[0][4]:
            counter.add("invalid_box")
            continue
        counter.add("fixed_box", parsed.fixed > 0)
        idx.append(i)
        preds.append(unique[0][:4])
        gts.append((gt.x1, gt.y1, gt.x2, gt.y2))
    if idx:
        dev = resolve_device(device)
        p = torch.tensor(preds, dtype=torch.float64, device=dev)  # [K, 4]
        g = torch.tensor(gts, dtype=torch.float64, device=dev)  # [K, 4]
        vals = paired_iou(p, g, giou=variant == "giou")  # [K]
        if variant == "giou":
            vals = (vals + 1.0) / 2.0
        if threshold is not None:
            vals = (vals >= threshold).double()
        for i, v in zip(idx, vals.tolist()):
            out[i] = float(v)
    return counter.scores(out, columns, "iou")


iou.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
