"""The detection formula, batched on tensors, and the same formula written per sample as its spec.

Inputs per completion: predicted boxes ``(x1, y1, x2, y2, label_id, confidence)`` in a canonical order
(the caller sorts them by content, so the result does not depend on output order) and ground-truth
boxes ``(x1, y1, x2, y2, label_id)``. ``label_id`` -1 is "no label"; ``agnostic`` records ignore labels.

1. Duplicates: a prediction is dropped when an earlier one (canonical order) with the same label
   overlaps it with IoU > ``dedup_iou``. Dropped boxes neither help nor hurt.
2. One-to-one matching over the full N x M IoU matrix (labels must agree unless agnostic), maximising
   the total IoU (``mode="mean_iou"``) or the number of pairs with IoU >= ``iou_threshold``
   (``mode="f1"``): the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``). Samples whose
   positive entries share no row or column are matched directly on the tensor (that is the optimum).
3. Geometry score, symmetric in false positives and misses:
   ``mean_iou = sum(IoU of matches) / max(N_pred, N_gt)``, ``f1 = 2 TP / (N_pred + N_gt)`` where a TP
   is a match with IoU >= ``iou_threshold``.
4. Confidence (when ``confidence_weight`` w > 0): each kept prediction with confidence c (1.0 when
   the model gave none) and outcome t (1 for a TP, else 0) earns ``t - (c - t)^2`` (a Brier score plus
   a term independent of c, so still proper: the expected value peaks at c = P(TP)); a false box
   earns ``-c^2 <= 0``, so a wrong box at confidence 0 is no free credit. ``calib = max(0, sum) /
   max(N_pred, N_gt)`` and the score is ``(1 - w) * geometry + w * calib``.

Both empty: 1.0 (a correct "no objects"). Scores lie in [0, 1].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from rewards.geometry import pad_boxes, pairwise_iou

MODES = ("mean_iou", "f1")
PredBox = tuple[float, float, float, float, int, float]  # x1, y1, x2, y2, label_id, confidence
GtBox = tuple[float, float, float, float, int]  # x1, y1, x2, y2, label_id
# f1 matching weight for a pair at or above the threshold: 1 + TIE * IoU (count first, then IoU)
_TIE = 1e-4


def _assign(weights: Tensor) -> Tensor:
    """Maximum-weight one-to-one assignment per batch item.

    weights: [B, N, M] >= 0 (zero = may not match). Returns a bool [B, N, M] assignment holding only
    positive-weight pairs.
    """
    pos = weights > 0  # [B, N, M]
    conflict = (pos.sum(dim=2) > 1).any(dim=1) | (pos.sum(dim=1) > 1).any(dim=1)  # [B]
    assigned = pos & ~conflict[:, None, None]  # conflict-free items: every positive entry is matched
    hard = conflict.nonzero().flatten().tolist()
    if hard:
        w_np = weights[hard].cpu().numpy()  # [H, N, M]
        rows_all, cols_all, items = [], [], []
        for k, b in enumerate(hard):
            rows, cols = linear_sum_assignment(w_np[k], maximize=True)
            keep = w_np[k][rows, cols] > 0
            rows_all.append(rows[keep])
            cols_all.append(cols[keep])
            items.append(np.full(int(keep.sum()), b))
        b_idx = torch.as_tensor(np.concatenate(items), dtype=torch.long, device=weights.device)
        r_idx = torch.as_tensor(np.concatenate(rows_all), dtype=torch.long, device=weights.device)
        c_idx = torch.as_tensor(np.concatenate(cols_all), dtype=torch.long, device=weights.device)
        assigned[b_idx, r_idx, c_idx] = True
    return assigned


def score_detections(
    preds: Sequence[Sequence[PredBox]],
    gts: Sequence[Sequence[GtBox]],
    agnostic: Sequence[bool],
    mode: str = "mean_iou",
    iou_threshold: float = 0.5,
    dedup_iou: float = 0.95,
    confidence_weight: float = 0.0,
    device: torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Score B completions at once (see module doc).

    Returns (scores [B] float64 in [0, 1], n_duplicates [B] long) on ``device``.
    """
    if mode not in MODES:
        raise ValueError(f"detection: score must be one of {MODES}, got {mode!r}")
    device = device or torch.device("cpu")
    pb, pmask = pad_boxes(preds, device, width=6)  # [B, N, 6], [B, N]
    gb, gmask = pad_boxes(gts, device, width=5)  # [B, M, 5], [B, M]
    n = pb.shape[1]
    plab, glab, conf = pb[..., 4].long(), gb[..., 4].long(), pb[..., 5]  # [B, N], [B, M], [B, N]
    agn = torch.as_tensor(list(agnostic), dtype=torch.bool, device=device)[:, None, None]  # [B, 1, 1]

    # 1. duplicates: dropped if an earlier same-label prediction overlaps it above dedup_iou
    pp = pairwise_iou(pb[..., :4], pb[..., :4])  # [B, N, N]
    same = agn | (plab[:, :, None] == plab[:, None, :])  # [B, N, N]
    earlier = torch.ones(n, n, dtype=torch.bool, device=device).triu(diagonal=1)  # [j, i]: j < i
    dup = ((pp > dedup_iou) & same & earlier & pmask[:, :, None]).any(dim=1) & pmask  # [B, N]
    keep = pmask & ~dup  # [B, N]

    # 2. matching over the full IoU matrix, labels agreeing unless agnostic
    iou = pairwise_iou(pb[..., :4], gb[..., :4])  # [B, N, M]
    label_ok = agn | ((plab[:, :, None] == glab[:, None, :]) & (plab[:, :, None] >= 0))
    valid = label_ok & keep[:, :, None] & gmask[:, None, :]  # [B, N, M]
    iou = torch.where(valid, iou, torch.zeros_like(iou))
    hit = iou >= iou_threshold  # [B, N, M]
    weights = iou if mode == "mean_iou" else torch.where(hit & valid, 1.0 + _TIE * iou, torch.zeros_like(iou))
    matched = _assign(weights)  # [B, N, M]

    # 3. geometry score
    n_pred = keep.sum(dim=1).double()  # [B]
    n_gt = gmask.sum(dim=1).double()  # [B]
    denom = torch.maximum(n_pred, n_gt).clamp(min=1)  # [B]
    tp = (matched & hit).any(dim=2)  # [B, N]
    if mode == "mean_iou":
        geometry = (iou * matched).sum(dim=(1, 2)) / denom
    else:
        geometry = 2 * tp.sum(dim=1).double() / (n_pred + n_gt).clamp(min=1)
    both_empty = (n_pred == 0) & (n_gt == 0)
    geometry = torch.where(both_empty, torch.ones_like(geometry), geometry)

    # 4. confidence, a proper scoring rule in which a false box never earns credit
    if confidence_weight > 0:
        t = tp.double()  # [B, N]
        per_box = (t - (conf - t) ** 2) * keep  # [B, N]
        calib = per_box.sum(dim=1).clamp(min=0) / denom  # [B]
        calib = torch.where(both_empty, torch.ones_like(calib), calib)
        geometry = (1 - confidence_weight) * geometry + confidence_weight * calib
    return geometry.clamp(0.0, 1.0), dup.sum(dim=1)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (
        max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    )
    return inter / union if union > 0 else 0.0


def reference_score(
    pred: Sequence[PredBox],
    gt: Sequence[GtBox],
    agnostic: bool,
    mode: str = "mean_iou",
    iou_threshold: float = 0.5,
    dedup_iou: float = 0.95,
    confidence_weight: float = 0.0,
) -> float:
    """The same formula for one completion, in plain Python loops (the spec, and the benchmark baseline)."""
    kept: list[PredBox] = []
    for i, p in enumerate(pred):
        if not any((agnostic or q[4] == p[4]) and _iou(q, p) > dedup_iou for q in pred[:i]):
            kept.append(p)
    if not kept and not gt:
        return 1.0
    weights = np.zeros((len(kept), len(gt)))
    ious = np.zeros((len(kept), len(gt)))
    for i, p in enumerate(kept):
        for j, g in enumerate(gt):
            if agnostic or (p[4] == g[4] and p[4] >= 0):
                ious[i, j] = _iou(p, g)
                if mode == "mean_iou":
                    weights[i, j] = ious[i, j]
                elif ious[i, j] >= iou_threshold:
                    weights[i, j] = 1.0 + _TIE * ious[i, j]
    rows, cols = linear_sum_assignment(weights, maximize=True) if kept and gt else ([], [])
    pairs = [(r, c) for r, c in zip(rows, cols) if weights[r, c] > 0]
    tp = {r for r, c in pairs if ious[r, c] >= iou_threshold}
    denom = max(len(kept), len(gt), 1)
    if mode == "mean_iou":
        geometry = sum(ious[r, c] for r, c in pairs) / denom
    else:
        geometry = 2 * len(tp) / max(len(kept) + len(gt), 1)
    if confidence_weight > 0:
        total = sum(
            (1.0 if i in tp else 0.0) - (p[5] - (1.0 if i in tp else 0.0)) ** 2 for i, p in enumerate(kept)
        )
        geometry = (1 - confidence_weight) * geometry + confidence_weight * max(0.0, total) / denom
    return min(max(geometry, 0.0), 1.0)
