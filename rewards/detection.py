"""``detection``: many labelled boxes (optionally with confidences) against ``solution["boxes"/"labels"]``.

Applies to records whose solution has ``boxes`` and that are not tracking records (``task ==
"tracking"``; without a ``task`` column, a solution without ``labels`` is taken as tracking). A
solution without ``labels`` (with a task column saying detection) is class-agnostic. Empty ``boxes``
means "no objects": answering ``[]`` (or "none") then scores 1.0 and any box scores 0.

Parsing (per string): :mod:`rewards.boxes` reads Qwen2.5-VL's ``[{"bbox_2d": [...], "label": ...,
"score": ...}]`` and the other forms, reorders reversed corners, clips to the image (or 0-1000),
keeps malformed entries as boxes that match nothing, and rejects answers with more than ``max_boxes``
boxes (score 0, ``too_many_boxes``) before any geometry runs. A box without a label matches no
labelled ground truth: it is a false positive, never a crash. Predictions are put in a canonical order
(confidence, then coordinates, then label) so the score never depends on the order of the output.

Scoring (batched on tensors on ``device``): :mod:`rewards.matching` -- duplicates removed by IoU,
Hungarian matching over the full N x M IoU matrix, ``score="mean_iou"`` (sum of matched IoU over
max(N_pred, N_gt), default) or ``"f1"`` at ``iou_threshold``, and with ``confidence_weight`` > 0 a
proper confidence score mixed in. Range [0, 1].
"""

from __future__ import annotations

from typing import Annotated, Any

import numpy as np
import torch

from rewards.boxes import Box, clean_boxes, fast_parse, gt_box, parse_boxes
from rewards.columns import column, completion_text, frame_size, resolve_device, solutions
from rewards.matching import BadGroundTruth, GtBox, Mode, PredBox, score_detections
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer, fast_answer, normalize_label, synonym_table
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores


def is_detection_record(solution: dict[str, Any], task: Any) -> bool:
    """Whether ``detection`` applies (``boxes`` present and not a tracking record)."""
    if solution.get("boxes") is None:
        return False
    if task is not None:
        return task != "tracking"
    return solution.get("labels") is not None


def canonical_order(boxes: list[Box]) -> list[Box]:
    """Valid boxes by confidence (missing = 1.0) descending, then coordinates and label; invalid last."""
    return sorted(
        boxes,
        key=lambda b: (
            not b.valid,
            -(1.0 if b.score is None else b.score),
            b.x1,
            b.y1,
            b.x2,
            b.y2,
            b.label or "",
        ),
    )


class _LabelIds:
    """Maps normalised labels (through synonyms) to integer ids shared by one batch."""

    def __init__(self, synonyms: dict[str, str]):
        self.synonyms: dict[str, str] = synonyms
        self.ids: dict[str, int] = {}  # normalised label -> id
        self.raw: dict[Any, int] = {}  # label as given -> id (memo)

    def __call__(self, label: Any) -> int:
        if label is None:
            return -1
        key = label if isinstance(label, str) else repr(label)
        found = self.raw.get(key)
        if found is None:
            norm = normalize_label(label)
            norm = self.synonyms.get(norm, norm)
            found = self.ids.setdefault(norm, len(self.ids)) if norm else -1
            self.raw[key] = found
        return found


_SEQUENCES = frozenset({list, tuple})
_FOUR = frozenset({4})


def _bad_gt(record: Any, j: int, box: Any) -> ValueError:
    return ValueError(f"detection: record {record!r}: solution box {j} must be 4 finite numbers, got {box!r}")


def _canonical_order(
    item: np.ndarray, valid: np.ndarray, conf: np.ndarray, xyxy: np.ndarray, rank: np.ndarray
):
    """:func:`canonical_order` for many answers at once: a stable sort of the flat boxes by (answer,
    invalid, -confidence, x1, y1, x2, y2, label rank). Sorted on the first three keys, then only the
    runs that tie there (duplicates, missing confidences) on the rest."""
    k1 = item * 2 + ~valid  # answer, then valid first
    neg = -conf
    order = np.lexsort((neg, k1))
    a, c = k1[order], neg[order]
    tie = (a[1:] == a[:-1]) & (c[1:] == c[:-1])
    if tie.any():
        group = np.cumsum(np.concatenate(([True], ~tie))) - 1  # [T] tie group of each sorted position
        pos = np.flatnonzero(np.bincount(group)[group] > 1)  # positions in groups of two or more
        sub = order[pos]
        x = xyxy[sub]
        order[pos] = sub[np.lexsort((rank[sub], x[:, 3], x[:, 2], x[:, 1], x[:, 0], group[pos]))]
    return order


def _parse_predictions(
    texts: list[str],
    frames: list[tuple[float, float] | None],
    max_boxes: int,
    label_id: _LabelIds,
    counter: MetricCounter,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every completion's predictions, canonically ordered: (boxes [B, L, 6], counts [B], failed [B]).

    Rows are ``(x1, y1, x2, y2, label_id, confidence)`` (confidence 1.0 when not given) padded with
    zeros, L = max(1, most boxes). Answers in the common well-formed shapes go through the batch fast
    path (:func:`rewards.parsing.fast_answer`, :func:`rewards.boxes.fast_parse`,
    :func:`rewards.boxes.clean_boxes`, one sort for all), the rest through :func:`parse_boxes` one by
    one; both give the same rows (``tests/rewards/test_detection_fastpath.py``).
    """
    b_total = len(texts)
    fast = fast_parse([fast_answer(t) for t in texts])
    counts = np.asarray(fast.counts, dtype=np.int64)  # -1: not taken by the fast path
    failed = np.zeros(b_total, dtype=bool)
    slow_rows: dict[int, list[PredBox]] = {}
    for b in np.flatnonzero(counts < 0).tolist():
        parsed = parse_boxes(extract_answer(texts[b]).text, frames[b], max_boxes=max_boxes)
        if parsed.ok:
            row = [
                (x.x1, x.y1, x.x2, x.y2, label_id(x.label), 1.0 if x.score is None else x.score)
                for x in canonical_order(parsed.boxes)
            ]
            counter.add("invalid_box", parsed.invalid)
            counter.add("fixed_box", parsed.fixed)
            counter.add("unlabeled_box", sum(r[4] < 0 for r in row) - parsed.invalid)
        else:  # scored 0; still batched so that its ground truth is checked like every other
            counter.add("too_many_boxes" if parsed.failure == "too_many_boxes" else "parse_fail")
            row = []
            failed[b] = True
        slow_rows[b] = row
        counts[b] = len(row)
    # fast path: drop answers with too many boxes, then make_box, labels and canonical order on arrays
    taken = np.asarray(fast.counts, dtype=np.int64)
    item = np.repeat(np.arange(b_total), np.maximum(taken, 0))  # [T] answer of each box
    too_many = taken > max_boxes
    if too_many.any():
        counter.add("too_many_boxes", int(too_many.sum()))
        failed |= too_many
        counts[too_many] = 0
    keep = ~too_many[item]
    inf = float("inf")
    wh = np.array([f if f is not None else (inf, inf) for f in frames], dtype=np.float64).reshape(-1, 2)
    item = item[keep]
    xyxy, conf, valid, fixed = clean_boxes(fast.coords[keep], fast.scores[keep], wh[item, 0], wh[item, 1])
    raw_labels = fast.labels if keep.all() else [lab for lab, k in zip(fast.labels, keep.tolist()) if k]
    ids: dict[str | None, int] = {None: -1}
    keys: dict[str | None, str] = {None: ""}
    for raw in set(raw_labels):
        if raw is not None:
            norm = normalize_label(raw) or None
            ids[raw], keys[raw] = label_id(norm), norm or ""
    rank = {key: r for r, key in enumerate(sorted(set(keys.values())))}
    lab = np.fromiter(map(ids.__getitem__, raw_labels), dtype=np.int64, count=len(raw_labels))
    lab_rank = np.fromiter((rank[keys[r]] for r in raw_labels), dtype=np.int64, count=len(raw_labels))
    lab = np.where(valid, lab, -1)
    lab_rank = np.where(valid, lab_rank, rank[""])
    conf_row = np.where(np.isnan(conf), 1.0, conf)
    n_invalid = int((~valid).sum())
    counter.add("invalid_box", n_invalid)
    counter.add("fixed_box", int(fixed.sum()))
    counter.add("unlabeled_box", int((lab < 0).sum()) - n_invalid)
    # canonical_order within each answer: valid first, confidence descending, coordinates, label
    order = _canonical_order(item, valid, conf_row, xyxy, lab_rank)
    length = max(1, int(counts.max(initial=0)))
    out = np.zeros((b_total, length, 6), dtype=np.float64)
    if len(order):
        item = item[order]
        first = np.searchsorted(item, item, side="left")  # index of each answer's first box
        slot = np.arange(len(item)) - first
        out[item, slot, :4] = xyxy[order]
        out[item, slot, 4] = lab[order]
        out[item, slot, 5] = conf_row[order]
    for b, row in slow_rows.items():
        if row:
            out[b, : len(row)] = np.asarray(row, dtype=np.float64)
    return out, counts, failed


@register_reward("detection")
def detection(
    completions: list,
    score: Mode = "mean_iou",
    iou_threshold: Annotated[float, Range(0, 1)] = 0.5,
    dedup_iou: Annotated[float, Range(0, 1)] = 0.95,
    max_boxes: Annotated[int, Range(1, 10_000)] = 100,
    confidence_weight: Annotated[float, Range(0, 1)] = 0.0,
    synonyms: dict[str, str | list[str]] | None = None,
    device: str | torch.device | None = None,
    **columns: Any,
) -> Scores:
    """Detection: one-to-one matched boxes, false positives and misses penalised alike, in [0, 1]."""
    check_arguments(detection, locals())
    n = len(completions)
    sols = solutions(columns, n)
    tasks, spaces, sizes, ids = (column(columns, k, n) for k in ("task", "coord_space", "image_size", "id"))
    label_id = _LabelIds(synonym_table(synonyms))
    counter = MetricCounter(
        "parse_fail", "too_many_boxes", "invalid_box", "fixed_box", "unlabeled_box", "duplicates"
    )
    out: list[float | None] = [None] * n
    idx: list[int] = []
    texts: list[str] = []
    gts: list[list[GtBox]] = []
    agnostic: list[bool] = []
    frames: list[tuple[float, float] | None] = []
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        if not is_detection_record(sol, tasks[i]):
            continue
        frame = frame_size(spaces[i], sizes[i])
        gt_boxes, gt_labels = sol["boxes"], sol.get("labels")
        if not isinstance(gt_boxes, (list, tuple)) or not isinstance(gt_labels, (list, tuple, type(None))):
            raise ValueError(f"detection: record {ids[i]!r}: solution boxes and labels must be lists")
        gt_boxes = list(gt_boxes)
        if gt_labels is not None and len(gt_labels) != len(gt_boxes):
            raise ValueError(
                f"detection: record {ids[i]!r}: solution has {len(gt_boxes)} boxes but {len(gt_labels)} labels"
            )
        if not (set(map(type, gt_boxes)) <= _SEQUENCES and set(map(len, gt_boxes)) <= _FOUR):
            bad = [j for j, b in enumerate(gt_boxes) if not isinstance(b, (list, tuple)) or len(b) != 4]
            if bad:
                raise _bad_gt(ids[i], bad[0], gt_boxes[bad[0]])
        # raw here; reordered, clipped and checked for finiteness on the tensor (score_detections)
        if gt_labels is None:
            gt_row = [(b[0], b[1], b[2], b[3], -1) for b in gt_boxes]
        else:
            known = label_id.raw  # labels seen before: their ids without a call
            gt_row = [
                (b[0], b[1], b[2], b[3], known[lab] if type(lab) is str and lab in known else label_id(lab))
                for b, lab in zip(gt_boxes, gt_labels)
            ]
        out[i] = 0.0
        idx.append(i)
        texts.append(completion_text(completion))
        frames.append(frame)
        agnostic.append(gt_labels is None)
        gts.append(gt_row)
    if idx:
        pred_boxes, counts, failed = _parse_predictions(texts, frames, max_boxes, label_id, counter)
        dev = resolve_device(device)
        try:
            scores, dups = score_detections(
                [],
                gts,
                agnostic,
                score,
                iou_threshold,
                dedup_iou,
                confidence_weight,
                dev,
                frames,
                padded_preds=(pred_boxes, counts),
            )
        except BadGroundTruth as e:
            raise _bad_gt(ids[idx[e.item]], e.box, sols[idx[e.item]]["boxes"][e.box]) from None
        except (TypeError, ValueError, OverflowError):  # a non-number (or 1e400) in a ground-truth box
            for i in idx:
                for j, b in enumerate(sols[i]["boxes"]):
                    if gt_box(b) is None:
                        raise _bad_gt(ids[i], j, b) from None
            raise
        counter.add("duplicates", int(dups.sum()))
        for b, (i, v) in enumerate(zip(idx, scores.tolist())):
            out[i] = 0.0 if failed[b] else float(v)
    return counter.scores(out, columns, "detection")


detection.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
