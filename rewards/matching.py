"""The detection formula, batched on tensors, and the same formula written per sample as its spec.

Inputs per completion: predicted boxes ``(x1, y1, x2, y2, label_id, confidence)`` in a canonical order
(the caller sorts them by content, so the result does not depend on output order) and ground-truth
boxes ``(x1, y1, x2, y2, label_id)``. ``label_id`` -1 is "no label"; ``agnostic`` records ignore labels.

1. Duplicates: a prediction is dropped when an earlier one (canonical order) with the same label
   overlaps it with IoU > ``dedup_iou``. Dropped boxes neither help nor hurt.
2. One-to-one matching over the full N x M IoU matrix (labels must agree unless agnostic), maximising
   the total IoU (``mode="mean_iou"``) or the number of pairs with IoU >= ``iou_threshold``
   (``mode="f1"``, ties broken by IoU). Items where every row's (or every column's) best entry is
   in a different column (row) take those entries directly on the tensor -- that reaches the upper
   bound, so it is the optimum; the rest (a few percent) go to the Hungarian algorithm
   (``scipy.optimize.linear_sum_assignment``), one item at a time.
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
from typing import Literal, get_args

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from rewards.geometry import pad_boxes, paired_iou

Mode = Literal["mean_iou", "f1"]
MODES = get_args(Mode)
PredBox = tuple[float, float, float, float, int, float]  # x1, y1, x2, y2, label_id, confidence
GtBox = tuple[float, float, float, float, int]  # x1, y1, x2, y2, label_id
# f1 matching weight for a pair at or above the threshold: 1 + TIE * IoU (count first, then IoU)
_TIE = 1e-4


def _best_is_distinct(weights: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Each row's (dim=2) or column's (dim=1) best positive entry, and whether those never collide.

    When every row's best column is a different column, giving each row its best is optimal: it
    reaches the upper bound sum_i max_j w_ij. Returns (choice [B, N, M] bool, distinct [B] bool).
    """
    best = weights.argmax(dim=dim, keepdim=True)  # [B, 1, M] or [B, N, 1]
    choice = torch.zeros_like(weights, dtype=torch.bool).scatter_(dim, best, True) & (weights > 0)
    distinct = (choice.sum(dim=3 - dim) <= 1).all(dim=1)  # no column (row) picked twice
    return choice, distinct


def _assign(weights: Tensor) -> Tensor:
    """Maximum-weight one-to-one assignment per batch item.

    weights: [B, N, M] >= 0 (zero = may not match). Returns a bool [B, N, M] assignment holding only
    positive-weight pairs. Items whose rows (or columns) have distinct best entries take them (exact,
    see :func:`_best_is_distinct`); the rest go to scipy's Hungarian solver one by one.
    """
    assigned, rows_ok = _best_is_distinct(weights, dim=2)  # [B, N, M], [B]
    assigned &= rows_ok[:, None, None]
    conflict = ~rows_ok  # [B]
    if conflict.any():  # try the columns' best entries where the rows' collide
        rest = conflict.nonzero().flatten()
        by_col, cols_ok = _best_is_distinct(weights[rest], dim=1)
        assigned[rest] = by_col & cols_ok[:, None, None]
        conflict[rest[cols_ok]] = False
    hard = conflict.nonzero().flatten()
    if hard.numel():
        w_np = np.ascontiguousarray(weights[hard].cpu().numpy())  # [H, N, M]
        pairs = [linear_sum_assignment(w, maximize=True) for w in w_np]  # scipy's C solver, per item
        lengths = np.fromiter((len(r) for r, _ in pairs), dtype=np.int64, count=len(pairs))
        item = np.repeat(np.arange(len(pairs)), lengths)  # [P]
        rows = np.concatenate([r for r, _ in pairs])  # [P]
        cols = np.concatenate([c for _, c in pairs])  # [P]
        keep = w_np[item, rows, cols] > 0  # zero-weight pairs are not matches
        b_idx = hard.cpu()[torch.from_numpy(item[keep])].to(weights.device)
        r_idx = torch.from_numpy(rows[keep]).to(weights.device)
        c_idx = torch.from_numpy(cols[keep]).to(weights.device)
        assigned[b_idx, r_idx, c_idx] = True
    return assigned


def _sparse_iou(a: Tensor, b: Tensor, pairs: Tensor) -> Tensor:
    """IoU of ``a[b, i]`` with ``b[b, j]`` only where ``pairs[b, i, j]`` (0 elsewhere).

    a: [B, N, 4], b: [B, M, 4], pairs: [B, N, M] bool. Returns [B, N, M] float64. Labels rule out most
    pairs, so this gathers the few candidates instead of computing the dense matrix.
    """
    bi, ii, jj = pairs.nonzero(as_tuple=True)  # [K] each
    out = torch.zeros(pairs.shape, dtype=torch.float64, device=pairs.device)
    if bi.numel():
        out[bi, ii, jj] = paired_iou(a[bi, ii], b[bi, jj])  # [K]
    return out


class BadGroundTruth(ValueError):
    """A ground-truth box that is not 4 finite numbers: batch ``item``, box ``box``."""

    def __init__(self, item: int, box: int):
        super().__init__(f"ground-truth box {box} of batch item {item} is not 4 finite numbers")
        self.item, self.box = item, box


def _clean_boxes(g: Tensor, mask: Tensor, frames: Sequence[tuple[float, float] | None]) -> Tensor:
    """Reorder corners and clip into [0, W] x [0, H]. g: [B, M, 4], mask [B, M]. Returns [B, M, 4]."""
    bad = ~torch.isfinite(g).all(dim=-1) & mask  # [B, M]
    if bad.any():
        item, box = (int(v) for v in bad.nonzero()[0])
        raise BadGroundTruth(item, box)
    inf = float("inf")
    wh = torch.tensor([f if f is not None else (inf, inf) for f in frames], dtype=g.dtype, device=g.device)
    lo = torch.minimum(g[..., :2], g[..., 2:]).clamp(min=0)  # [B, M, 2]
    hi = torch.maximum(g[..., :2], g[..., 2:]).clamp(min=0)  # [B, M, 2]
    lim = wh[:, None, :]  # [B, 1, 2]
    return torch.cat([torch.minimum(lo, lim), torch.minimum(hi, lim)], dim=-1)


def score_detections(
    preds: Sequence[Sequence[PredBox]],
    gts: Sequence[Sequence[GtBox]],
    agnostic: Sequence[bool],
    mode: str = "mean_iou",
    iou_threshold: float = 0.5,
    dedup_iou: float = 0.95,
    confidence_weight: float = 0.0,
    device: torch.device | None = None,
    gt_frames: Sequence[tuple[float, float] | None] | None = None,
    padded_preds: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Tensor, Tensor]:
    """Score B completions at once (see module doc).

    With ``gt_frames`` (per item, (W, H) or None) the ground-truth boxes are taken raw and cleaned here
    on the tensor like :func:`rewards.boxes.gt_box` does one by one: corners reordered, clipped to
    ``[0, W] x [0, H]``; a non-finite one raises :class:`BadGroundTruth`. Without it they must already
    be clean. ``padded_preds`` (boxes [B, L, 6] float64 zero-padded, counts [B]) replaces ``preds``
    when given: the same boxes already packed as :func:`rewards.geometry.pad_boxes` packs them. Returns (scores [B] float64 in [0, 1], n_duplicates [B] long) on ``device``.
    """
    if mode not in MODES:
        raise ValueError(f"detection: score must be one of {MODES}, got {mode!r}")
    device = device or torch.device("cpu")
    if padded_preds is None:
        pb, pmask = pad_boxes(preds, device, width=6)  # [B, N, 6], [B, N]
    else:
        boxes, counts = padded_preds
        pb = torch.from_numpy(boxes).to(device)  # [B, N, 6]
        pmask = torch.from_numpy(np.arange(boxes.shape[1])[None, :] < counts[:, None]).to(device)  # [B, N]
    gb, gmask = pad_boxes(gts, device, width=5)  # [B, M, 5], [B, M]
    if gt_frames is not None:
        gb = torch.cat([_clean_boxes(gb[..., :4], gmask, gt_frames), gb[..., 4:]], dim=-1)
    n = pb.shape[1]
    plab, glab, conf = pb[..., 4].long(), gb[..., 4].long(), pb[..., 5]  # [B, N], [B, M], [B, N]
    agn = torch.as_tensor(list(agnostic), dtype=torch.bool, device=device)[:, None, None]  # [B, 1, 1]

    # 1. duplicates: dropped if an earlier same-label prediction overlaps it above dedup_iou
    earlier = torch.ones(n, n, dtype=torch.bool, device=device).triu(diagonal=1)  # [j, i]: j < i
    same = (agn | (plab[:, :, None] == plab[:, None, :])) & earlier & pmask[:, :, None] & pmask[:, None, :]
    pp = _sparse_iou(pb[..., :4], pb[..., :4], same)  # [B, N, N], 0 outside same-label earlier pairs
    dup = (pp > dedup_iou).any(dim=1)  # [B, N]
    keep = pmask & ~dup  # [B, N]

    # 2. matching over the full IoU matrix, labels agreeing unless agnostic
    label_ok = agn | ((plab[:, :, None] == glab[:, None, :]) & (plab[:, :, None] >= 0))
    valid = label_ok & keep[:, :, None] & gmask[:, None, :]  # [B, N, M]
    iou = _sparse_iou(pb[..., :4], gb[..., :4], valid)  # [B, N, M], 0 where labels differ
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
