"""COCO detection metrics through ``pycocotools.COCOeval`` (bbox), in original image pixels.

Each record is one COCO image (a record asks about its own image, often for one category, as
Visual-RFT's per-(image, category) records do): its ground truth is the record's boxes, its detections
are the parsed boxes of one completion with the model's confidence as the score (1.0 where it gives
none). A record that failed, has no prediction or whose answer does not parse has no detections, so its
objects are all misses; a record with no objects has no ground truth, so any box on it is a false
positive of its class. The category set is the (normalised) labels of the ground truth; a predicted
box whose label is not one of them, or that has no label or is malformed, belongs to no category and
is counted (``unknown_label_boxes``, ``unlabeled_boxes``, ``invalid_boxes``), as a COCO submission
could not contain it.

``mAP_mean_of_classes`` is the mean over classes with ground truth of the per-class AP@[.5:.95], the
number Visual-RFT's tables call mAP; ``AP`` is COCOeval's ``stats[0]``.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, NamedTuple

from rewards.parsing import normalize_label

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
REPORTED = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")


class CocoImage(NamedTuple):
    """One image: ground-truth boxes (xyxy) with labels, and detections ``(xyxy, label, score)``."""

    gt_boxes: list[list[float]]
    gt_labels: list[str]
    detections: list[tuple[list[float], str, float]]


def _xywh(box: list[float]) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def coco_ap(images: list[CocoImage]) -> dict[str, Any]:
    """COCOeval bbox metrics of ``images``: STAT_NAMES (None where undefined, e.g. no ground truth),
    ``per_class`` {label: AP or None} and ``mAP_mean_of_classes``."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("detection metrics need pycocotools: pip install pycocotools") from None

    cats = sorted({lab for im in images for lab in im.gt_labels})
    none = {name: None for name in STAT_NAMES}
    if not cats or not images:
        return {**none, "per_class": {}, "mAP_mean_of_classes": None}
    cat_id = {c: i + 1 for i, c in enumerate(cats)}
    gts, dts = [], []
    for i, im in enumerate(images, start=1):
        for box, lab in zip(im.gt_boxes, im.gt_labels):
            b = _xywh(box)
            gts.append({"id": len(gts) + 1, "image_id": i, "category_id": cat_id[lab], "bbox": b,
                        "area": b[2] * b[3], "iscrowd": 0})  # fmt: skip
        for box, lab, score in im.detections:
            b = _xywh(box)
            dts.append({"id": len(dts) + 1, "image_id": i, "category_id": cat_id[lab], "bbox": b,
                        "area": b[2] * b[3], "iscrowd": 0, "score": float(score)})  # fmt: skip
    base = {"images": [{"id": i} for i in range(1, len(images) + 1)],
            "categories": [{"id": cat_id[c], "name": c} for c in cats]}  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        gt, dt = COCO(), COCO()
        gt.dataset = {**base, "annotations": gts}
        dt.dataset = {**base, "annotations": dts}
        gt.createIndex()
        dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out: dict[str, Any] = {name: (None if v < 0 else float(v)) for name, v in zip(STAT_NAMES, ev.stats)}
    precision = ev.eval["precision"]  # [T, R, K, A, M]; area "all" is 0, maxDets 100 is the last
    per_class = {}
    for k, c in enumerate(cats):
        p = precision[:, :, k, 0, -1]
        per_class[c] = float(p[p > -1].mean()) if (p > -1).any() else None
    out["per_class"] = per_class
    present = [v for v in per_class.values() if v is not None]
    out["mAP_mean_of_classes"] = sum(present) / len(present) if present else None
    return out


def record_images(results: list, j: int, options) -> tuple[list[CocoImage], dict[str, int]]:
    """The COCO images of completion index ``j`` of detection records, and the boxes left out."""
    table = options.box_table
    images, left_out = [], {"unknown_label_boxes": 0, "unlabeled_boxes": 0, "invalid_boxes": 0}
    for r in results:
        labels = [table.get(n, n) for n in (normalize_label(x) for x in r.solution.get("labels") or [])]
        boxes = [list(b) for b in r.solution.get("boxes") or []]
        dets = []
        pred = r.predictions[j] if j < len(r.predictions) else None
        if pred is not None and pred.ok:
            for b in pred.boxes:
                if b.box is None:
                    left_out["invalid_boxes"] += 1
                elif b.label is None:
                    left_out["unlabeled_boxes"] += 1
                else:
                    dets.append((b.box, b.label, 1.0 if b.score is None else b.score))
        images.append(CocoImage(boxes, labels, dets))
    known = {lab for im in images for lab in im.gt_labels}
    for im in images:
        kept = [d for d in im.detections if d[1] in known]
        left_out["unknown_label_boxes"] += len(im.detections) - len(kept)
        im.detections[:] = kept
    return images, left_out


def detection_metrics(results: list, k: int, options) -> dict[str, float | None]:
    """COCO metrics of detection records, averaged over the K completion indices (keys without prefix)."""
    from mmrft.evaluation.metrics import average

    runs = []
    for j in range(k):
        images, left_out = record_images(results, j, options)
        m = coco_ap(images)
        row: dict[str, float | None] = {name: m[name] for name in REPORTED}
        row["mAP_mean_of_classes"] = m["mAP_mean_of_classes"]
        row.update({f"AP/{c}": v for c, v in sorted(m["per_class"].items())})
        row.update({name: float(v) for name, v in left_out.items()})
        runs.append(row)
    return average(runs)
