"""The papers' metrics, per task, computed on the whole set of records (every rank's, gathered).

Every record counts: one that failed to load or generate, has no prediction, or whose answer does not
parse is wrong (IoU 0, not correct, no detections) and is also counted in ``failed_rate`` /
``parse_fail_rate``. Thresholds are inclusive (IoU >= m) with a 1e-9 tolerance for the float rounding
of mapping boxes back to original pixels. With K completions per record, every metric is computed for
each completion index k (completion k of every record, one "run") and averaged over k; ``pass@K`` is the
share of records with at least one passing completion.

Per task (keys ``<task>/<metric>``), by the evaluation family its spec names (``TaskSpec.eval_family``;
the built-in tasks are each their own family):

- classification: ``accuracy`` (exact match after the accuracy reward's normalisation, closed label set
  when the record has ``choices``), ``out_of_set_rate`` (answers that are not one of the choices);
- counting: ``accuracy``, ``MAE`` (over answers that state a count; ``MAE_records`` is how many);
- grounding: ``Acc@0.5`` (IoU >= 0.5 in original pixels), ``mIoU``;
- detection: COCO ``AP``, ``AP50``, ``AP75``, ``APs/m/l``, ``AR100``, ``AP/<class>`` and
  ``mAP_mean_of_classes`` through pycocotools (:mod:`mmrft.evaluation.coco`);
- temporal_grounding: ``R1@0.3``, ``R1@0.5``, ``R1@0.7`` (IoU >= m), ``mIoU``;
- tracking: ``mIoU`` (per record the mean per-frame IoU over max(T_pred, T_gt) frames, as the reward);
- chart_to_code: ``exec_rate`` (renders that produced a figure), ``score`` (mean chart_render),
  ``element`` / ``visual`` (its parts, over the renders that worked), ``code_rate``;
- every task: ``n``, ``failed_rate``, ``parse_fail_rate``, ``reward``, ``pass@1`` (and ``pass@K``),
  ``completion_len`` (tokens, when generated here), ``completion_chars``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from data_pipelines.tasks import TASKS
from rewards.accuracy import canonical, score_label
from rewards.geometry import interval_iou, paired_iou

TOL = 1e-9
R1_THRESHOLDS = (0.3, 0.5, 0.7)
# Metrics where lower is better (`mmrft eval compare` marks improvements by this).
LOWER_IS_BETTER = ("MAE", "failed_rate", "parse_fail_rate", "out_of_set_rate", "truncated_frac")


def eval_family(task: str) -> str:
    """The evaluation family that parses and scores ``task`` (its spec's ``eval_family``; an unknown
    task is its own family, which nothing here scores)."""
    return TASKS[task].eval_family if task in TASKS else task


def box_iou(a: list[float] | None, b: list[float] | None) -> float:
    """IoU of two xyxy boxes (0 when either is missing), by the rewards' geometry."""
    if a is None or b is None:
        return 0.0
    return float(
        paired_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0]
    )


def _segment_iou(pred: tuple[float, float] | None, solution: dict[str, Any]) -> float:
    if pred is None:
        return 0.0
    gs, ge = (float(v) for v in solution["segment"])
    gt = (min(gs, ge), max(gs, ge))
    dur = solution.get("duration")
    if type(dur) in (int, float) and dur > 0:  # clipped to the video as temporal_iou does
        gt = (min(max(gt[0], 0.0), dur), min(max(gt[1], 0.0), dur))
    p = torch.tensor([pred], dtype=torch.float64)
    return float(interval_iou(p, torch.tensor([gt], dtype=torch.float64))[0])


def _track_miou(track, gt_boxes: list) -> float:
    """The tracking reward's rule: both absent 1, one absent or malformed 0, else IoU; over max(T)."""
    if track is None:
        return 0.0
    total = 0.0
    for p, g in zip(track, gt_boxes):
        if p is None and g is None:
            total += 1.0
        elif p is not None and g is not None and p.box is not None:
            total += box_iou(p.box, [float(v) for v in g])
    return min(1.0, total / max(len(track), len(gt_boxes), 1))


def completion_values(task: str, pred, solution: dict[str, Any], options, extra: dict | None = None) -> dict:
    """The task's numbers for one completion (``pred`` None: no completion, the record counts as wrong).

    solution: ground truth in the ORIGINAL frame. Returns e.g. ``{"iou": 0.62}`` (grounding),
    ``{"correct": 1.0, "abs_error": 0.0}`` (counting); the metrics are means of these.
    """
    ok = pred is not None and pred.ok
    family = eval_family(task)
    if family == "classification":
        correct = score_label(pred.answer, solution, options.label_table, options.index_base) if ok else 0.0
        out = {"correct": correct}
        choices = [c for c in (solution.get("choices") or []) if c is not None]
        if choices and (solution.get("answer_format") or "label") == "label":
            allowed = {canonical(c, options.label_table) for c in choices}
            out["out_of_set"] = float(ok and pred.label not in allowed)
        return out
    if family == "counting":
        gt = int(solution["count"])
        value = pred.count if ok else None
        return {
            "correct": float(value == gt),
            "abs_error": None if value is None else float(abs(value - gt)),
        }
    if family == "grounding":
        return {"iou": box_iou(pred.boxes[0].box, [float(v) for v in solution["box"]]) if ok else 0.0}
    if family == "temporal_grounding":
        return {"iou": _segment_iou(pred.segment, solution) if ok else 0.0}
    if family == "tracking":
        return {"miou": _track_miou(pred.track, list(solution["boxes"])) if ok else 0.0}
    if family == "chart_to_code":
        return {"score": float((extra or {}).get("chart_score", 0.0)), "code": float(ok)}
    return {}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _per_k(task: str, values: list[dict]) -> dict[str, float | None]:
    """Task metrics of one completion index over the task's records (missing values already zero)."""
    family = eval_family(task)
    if family == "classification":
        out = {"accuracy": _mean([v["correct"] for v in values])}
        oos = [v["out_of_set"] for v in values if "out_of_set" in v]
        if oos:
            out["out_of_set_rate"] = _mean(oos)
        return out
    if family == "counting":
        errs = [v["abs_error"] for v in values if v.get("abs_error") is not None]
        return {
            "accuracy": _mean([v["correct"] for v in values]),
            "MAE": _mean(errs),
            "MAE_records": float(len(errs)),
        }
    if family == "grounding":
        ious = [v["iou"] for v in values]
        return {"Acc@0.5": _mean([float(x >= 0.5 - TOL) for x in ious]), "mIoU": _mean(ious)}
    if family == "temporal_grounding":
        ious = [v["iou"] for v in values]
        out = {f"R1@{m}": _mean([float(x >= m - TOL) for x in ious]) for m in R1_THRESHOLDS}
        out["mIoU"] = _mean(ious)
        return out
    if family == "tracking":
        return {"mIoU": _mean([v["miou"] for v in values])}
    if family == "chart_to_code":
        return {"score": _mean([v["score"] for v in values]), "code_rate": _mean([v["code"] for v in values])}
    return {}


def average(dicts: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Key-wise mean over dicts, ignoring None; None where every dict has None."""
    keys = list(dict.fromkeys(k for d in dicts for k in d))
    out = {}
    for key in keys:
        vals = [d[key] for d in dicts if d.get(key) is not None]
        out[key] = sum(vals) / len(vals) if vals else None
    return out


def _missing_values(task: str, solution: dict[str, Any], options) -> dict:
    return completion_values(task, None, solution, options)


def task_metrics(task: str, results: list, k: int, options) -> dict[str, float | None]:
    """Every metric of one task over its records (see the module doc), without the ``<task>/`` prefix."""
    n = len(results)
    runs = []
    for j in range(k):
        vals = [
            r.values[j] if j < len(r.values) else _missing_values(task, r.solution, options) for r in results
        ]
        m = _per_k(task, vals)
        have = [r for r in results if j < len(r.predictions)]
        m["parse_fail_rate"] = sum(not r.predictions[j].ok for r in have) / n
        m["failed_rate"] = (n - len(have)) / n
        runs.append(m)
    out: dict[str, float | None] = {"n": float(n), **average(runs)}
    out.update(common_metrics(results, k))
    if eval_family(task) == "detection":
        from mmrft.evaluation.coco import detection_metrics

        out.update(detection_metrics(results, k, options))
    return out


def common_metrics(results: list, k: int) -> dict[str, float | None]:
    """Reward mean, pass@1 / pass@K and completion lengths, pooled over the records' completions."""
    n = len(results)
    totals = [t for r in results for t in r.total if t is not None]
    tokens = [t for r in results if r.tokens is not None for t in r.tokens]
    out: dict[str, float | None] = {
        "reward": _mean(totals),
        "pass@1": sum(sum(r.passed) / k for r in results) / n if n else None,
    }
    if k > 1:
        out[f"pass@{k}"] = sum(any(r.passed) for r in results) / n if n else None
    if tokens:
        out["completion_len"] = _mean([float(t) for t in tokens])
    out["completion_chars"] = _mean([float(len(c)) for r in results for c in r.completions])
    return out


def summarize(results: list, names: list[str], k: int, options, chart=None) -> dict[str, float | None]:
    """The flat metrics dict of a whole evaluation: overall numbers first, then ``<task>/<metric>``."""
    common = common_metrics(results, k)
    out: dict[str, float | None] = {"n": float(len(results)), "reward": common.pop("reward")}
    for name in names:
        vals = [r.rewards[j][name] for r in results for j in range(len(r.rewards))]
        out[f"reward/{name}"] = _mean([v for v in vals if v is not None])
    have = [j < len(r.predictions) for r in results for j in range(k)]
    fails = [not r.predictions[j].ok for r in results for j in range(len(r.predictions))]
    out["pass@1"] = common.pop("pass@1")
    if k > 1:
        out[f"pass@{k}"] = common.pop(f"pass@{k}")
    out["parse_fail_rate"] = sum(fails) / len(have) if have else None
    out["failed_rate"] = (len(have) - sum(have)) / len(have) if have else None
    out.update(common)
    truncated = [t for r in results if r.truncated is not None for t in r.truncated]
    if truncated:
        out["truncated_frac"] = _mean([float(t) for t in truncated])
    order = list(TASKS)
    tasks = sorted({r.task for r in results}, key=lambda t: order.index(t) if t in order else len(order))
    for task in tasks:
        mine = [r for r in results if r.task == task]
        m = task_metrics(task, mine, k, options)
        if eval_family(task) == "chart_to_code" and chart is not None:
            m["exec_rate"] = chart.rendered / (len(mine) * k)  # records that failed count as not run
            m["element"] = chart.element_sum / chart.rendered if chart.rendered else None
            m["visual"] = chart.visual_sum / chart.rendered if chart.rendered else None
            for reason, count in sorted(chart.fails.items()):
                m[f"{reason}_rate"] = count / (len(mine) * k)
        out.update({f"{task}/{key}": v for key, v in m.items()})
    return {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in out.items()}
