"""Batched geometry on tensors: box IoU / GIoU (paired and all-pairs), interval IoU, padding.

All functions are pure tensor code and run on whatever device their inputs live on. Boxes are xyxy
with x1 <= x2, y1 <= y2 (the parser guarantees it). A pair whose union is zero (two zero-area boxes)
has IoU 0: an empty box never earns credit.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def paired_iou(a: Tensor, b: Tensor, giou: bool = False) -> Tensor:
    """IoU (or GIoU in [-1, 1]) of ``a[k]`` with ``b[k]``.

    a, b: [K, 4] xyxy. Returns [K]. Computed in float64 so that pixel coordinates up to ~1e7 stay exact.
    """
    a, b = a.double(), b.double()
    area_a = (a[:, 2] - a[:, 0]).clamp(min=0) * (a[:, 3] - a[:, 1]).clamp(min=0)  # [K]
    area_b = (b[:, 2] - b[:, 0]).clamp(min=0) * (b[:, 3] - b[:, 1]).clamp(min=0)  # [K]
    lt = torch.maximum(a[:, :2], b[:, :2])  # [K, 2]
    rb = torch.minimum(a[:, 2:], b[:, 2:])  # [K, 2]
    wh = (rb - lt).clamp(min=0)  # [K, 2]
    inter = wh[:, 0] * wh[:, 1]  # [K]
    union = area_a + area_b - inter  # [K]
    iou = torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))
    if not giou:
        return iou
    hull_lt = torch.minimum(a[:, :2], b[:, :2])
    hull_rb = torch.maximum(a[:, 2:], b[:, 2:])
    hull = (hull_rb - hull_lt).clamp(min=0).prod(dim=1)  # [K]
    penalty = torch.where(hull > 0, (hull - union) / hull.clamp(min=1e-300), torch.ones_like(hull))
    return iou - penalty


def pairwise_iou(a: Tensor, b: Tensor) -> Tensor:
    """All-pairs IoU within each batch item.

    a: [B, N, 4], b: [B, M, 4] xyxy. Returns [B, N, M] (float64).
    """
    ax1, ay1, ax2, ay2 = (t[:, :, None] for t in a.double().unbind(-1))  # each [B, N, 1]
    bx1, by1, bx2, by2 = (t[:, None, :] for t in b.double().unbind(-1))  # each [B, 1, M]
    iw = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp_(min=0)  # [B, N, M]
    ih = (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp_(min=0)  # [B, N, M]
    inter = iw.mul_(ih)
    area_a = (ax2 - ax1).clamp(min=0) * (ay2 - ay1).clamp(min=0)  # [B, N, 1]
    area_b = (bx2 - bx1).clamp(min=0) * (by2 - by1).clamp(min=0)  # [B, 1, M]
    union = (area_a + area_b).sub_(inter).clamp_(min=1e-300)  # inter <= union; union 0 means inter 0
    return inter.div_(union)


def interval_iou(p: Tensor, g: Tensor) -> Tensor:
    """IoU of 1-D intervals ``p[k]`` and ``g[k]`` ([K, 2] as start <= end). Returns [K] (float64).

    Two zero-length intervals have IoU 0 (an empty interval never earns credit).
    """
    p, g = p.double(), g.double()
    inter = (torch.minimum(p[:, 1], g[:, 1]) - torch.maximum(p[:, 0], g[:, 0])).clamp(min=0)  # [K]
    union = (p[:, 1] - p[:, 0]) + (g[:, 1] - g[:, 0]) - inter  # [K]
    return torch.where(union > 0, inter / union.clamp(min=1e-300), torch.zeros_like(union))


def pad_boxes(
    groups: Sequence[Sequence[Sequence[float]]], device: torch.device, width: int = 4
) -> tuple[Tensor, Tensor]:
    """Pack ragged lists of boxes into a padded tensor.

    groups: B lists of boxes (each ``width`` numbers). Returns (boxes [B, L, width] float64 with zeros
    as padding, mask [B, L] bool) with L = max(1, longest list).
    """
    lengths = np.fromiter((len(g) for g in groups), dtype=np.int64, count=len(groups))  # [B]
    length = max(1, int(lengths.max(initial=0)))
    mask = np.arange(length)[None, :] < lengths[:, None]  # [B, L]
    out = np.zeros((len(groups), length, width), dtype=np.float64)
    total = int(lengths.sum())
    if total:
        flat = itertools.chain.from_iterable(itertools.chain.from_iterable(groups))
        out[mask] = np.fromiter(flat, dtype=np.float64, count=total * width).reshape(total, width)
    return torch.from_numpy(out).to(device), torch.from_numpy(mask).to(device)
