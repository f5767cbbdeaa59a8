"""Benchmark: the batched ``detection`` reward against a per-sample Python implementation of the same formula.

20,000 completions with 10 boxes each (Qwen2.5-VL JSON with labels and confidences, jittered copies of
the ground truth, shuffled, with false positives, wrong labels, duplicates and misses), scored by

- ``batched``: ``rewards.get("detection")`` -- parsing per string, then dedup, IoU matrices, matching
  and scoring batched on tensors (``rewards.matching.score_detections``);
- ``per-sample``: the robust per-string parser (``extract_answer`` + ``parse_boxes``, which the
  batched reward also uses for every answer its fast path does not take), then
  ``rewards.matching.reference_score`` for each completion: Python loops for dedup and IoU and one
  ``scipy.optimize.linear_sum_assignment`` per completion.

The batched reward reads well-formed answers through its batch fast path (``rewards.parsing.fast_answer``,
``rewards.boxes.fast_parse``), which takes an answer only when it would parse to exactly the same boxes.
Both must give the same scores (asserted to 1e-9). Each time is the best of 2-3 repeats, for both sides;
the whole measurement runs ``--runs`` times (default 3) and each figure reported is the median over the
runs. Prints a table and writes ``benchmarks/results/rewards.json`` and ``.md``.
Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/reward_scoring.py [--n 20000] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

# This file is named like the package it measures: keep its folder off the import path.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import rewards  # noqa: E402
from rewards.boxes import gt_box, parse_boxes  # noqa: E402
from rewards.detection import _LabelIds, canonical_order  # noqa: E402
from rewards.matching import reference_score, score_detections  # noqa: E402
from rewards.parsing import extract_answer  # noqa: E402

LABELS = ["dog", "cat", "car", "person", "bird"]
W, H = 640, 480


def make_data(n: int, boxes: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """``n`` completions with ``boxes`` predicted boxes each, and their solutions."""
    rng = random.Random(seed)
    completions, sols = [], []
    for _ in range(n):
        gt = []
        for _ in range(boxes):
            x, y = rng.uniform(0, W - 120), rng.uniform(0, H - 120)
            gt.append(([x, y, x + rng.uniform(20, 120), y + rng.uniform(20, 120)], rng.choice(LABELS)))
        preds = []
        for box, label in gt[: boxes - 2]:  # two misses
            j = [rng.uniform(-8, 8) for _ in range(4)]
            lab = label if rng.random() < 0.9 else rng.choice(LABELS)
            preds.append(
                {
                    "bbox_2d": [round(c + d, 1) for c, d in zip(box, j)],
                    "label": lab,
                    "score": round(rng.random(), 3),
                }
            )
        preds.append(dict(preds[0]))  # a duplicate
        x, y = rng.uniform(0, W - 60), rng.uniform(0, H - 60)
        preds.append(
            {
                "bbox_2d": [round(x, 1), round(y, 1), round(x + 50, 1), round(y + 50, 1)],
                "label": rng.choice(LABELS),
                "score": round(rng.random(), 3),
            }
        )  # a false positive
        rng.shuffle(preds)
        completions.append(f"<think>I see {len(preds)} objects.</think><answer>{json.dumps(preds)}</answer>")
        sols.append({"boxes": [b for b, _ in gt], "labels": [lab for _, lab in gt]})
    return completions, sols


def per_sample(completions: list[str], sols: list[dict], **params) -> list[float]:
    """The straightforward implementation: parse, then the formula in Python loops, one sample at a time."""
    ids = _LabelIds({})
    out = []
    for c, sol in zip(completions, sols):
        parsed = parse_boxes(extract_answer(c).text, (W, H), max_boxes=100)
        if not parsed.ok:
            out.append(0.0)
            continue
        pred = [
            (b.x1, b.y1, b.x2, b.y2, ids(b.label), 1.0 if b.score is None else b.score)
            for b in canonical_order(parsed.boxes)
        ]
        gt = []
        for b, lab in zip(sol["boxes"], sol["labels"]):
            g = gt_box(b, (W, H))
            gt.append((g.x1, g.y1, g.x2, g.y2, ids(lab)))
        out.append(reference_score(pred, gt, False, **params))
    return out


def parse_only(completions: list[str], sols: list[dict]) -> tuple[list, list]:
    ids = _LabelIds({})
    preds, gts = [], []
    for c, sol in zip(completions, sols):
        parsed = parse_boxes(extract_answer(c).text, (W, H), max_boxes=100)
        preds.append(
            [
                (b.x1, b.y1, b.x2, b.y2, ids(b.label), 1.0 if b.score is None else b.score)
                for b in canonical_order(parsed.boxes)
            ]
        )
        gts.append([(*b, ids(lab)) for b, lab in zip(sol["boxes"], sol["labels"])])
    return preds, gts


def timed(fn, repeat: int = 1):
    best, value = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t0)
    return best, value


MODES = [("mean_iou", 0.0), ("f1", 0.0), ("mean_iou", 0.2)]


def bench_mode(
    det, completions: list[str], sols: list[dict], cols: dict, mode: str, conf_w: float, args
) -> dict:
    """Time both implementations for one setting, assert equal scores, return a result row."""
    params = dict(score=mode, confidence_weight=conf_w)
    ref_params = dict(mode=mode, confidence_weight=conf_w)
    t_ref, ref = timed(lambda: per_sample(completions, sols, **ref_params), repeat=2)
    det(completions[:64], **{k: v[:64] for k, v in cols.items()}, **params, device=args.device)  # warm-up
    t_bat, got = timed(lambda: det(completions, **cols, **params, device=args.device), repeat=2)
    diff = max(abs(a - b) for a, b in zip(ref, got))
    assert diff < 1e-9, f"batched and per-sample scores differ by {diff}"
    t_parse, (preds, gts) = timed(lambda: parse_only(completions, sols))
    agn, dev = [False] * args.n, torch.device(args.device)
    t_geo_bat, _ = timed(lambda: score_detections(preds, gts, agn, mode, 0.5, 0.95, conf_w, dev), repeat=3)
    t_geo_ref, _ = timed(
        lambda: [reference_score(p, g, False, **ref_params) for p, g in zip(preds, gts)], repeat=3
    )
    return {
        "score": mode,
        "confidence_weight": conf_w,
        "n": args.n,
        "boxes": args.boxes,
        "per_sample_s": round(t_ref, 3),
        "batched_s": round(t_bat, 3),
        "speedup": round(t_ref / t_bat, 2),
        "parse_s": round(t_parse, 3),
        "geometry_per_sample_s": round(t_geo_ref, 3),
        "geometry_batched_s": round(t_geo_bat, 3),
        "geometry_speedup": round(t_geo_ref / t_geo_bat, 2),
        "completions_per_s": round(args.n / t_bat),
        "max_abs_diff": diff,
        "mean_score": sum(got) / len(got),
    }


def _median_row(rows: list[dict]) -> dict:
    """Each timing (and ratio) as its median over the runs; the run's count kept in ``runs``."""
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float) and key not in ("confidence_weight", "mean_score"):
            out[key] = statistics.median(r[key] for r in rows)
    out["completions_per_s"] = round(statistics.median(r["completions_per_s"] for r in rows))
    out["max_abs_diff"] = max(r["max_abs_diff"] for r in rows)
    out["runs"] = len(rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--boxes", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch intra-op threads (the baseline uses one core)"
    )
    ap.add_argument("--runs", type=int, default=3, help="whole measurements; medians are reported")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "rewards"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    det = rewards.get("detection")
    completions, sols = make_data(args.n, args.boxes)
    cols = {"solution": sols, "task": ["detection"] * args.n, "image_size": [(W, H)] * args.n}
    runs = [
        [bench_mode(det, completions, sols, cols, mode, conf_w, args) for mode, conf_w in MODES]
        for _ in range(args.runs)
    ]
    rows = [_median_row([run[m] for run in runs]) for m in range(len(MODES))]
    header = (
        "| score | conf w | per-sample s | batched s | speedup | parse s | geometry per-sample s "
        "| geometry batched s | geometry speedup | completions/s |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        lines.append(
            f"| {r['score']} | {r['confidence_weight']} | {r['per_sample_s']} | {r['batched_s']} | "
            f"{r['speedup']}x | {r['parse_s']} | {r['geometry_per_sample_s']} | "
            f"{r['geometry_batched_s']} | {r['geometry_speedup']}x | {r['completions_per_s']:,} |"
        )
    env = {
        "device": args.device,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    table = "\n".join(lines)
    print(f"detection reward, {args.n} completions x {args.boxes} boxes, {env}\n{table}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# detection reward benchmark\n\n`OMP_WAIT_POLICY=PASSIVE python benchmarks/reward_scoring.py` on {env}; "
        f"{args.n} completions x {args.boxes} boxes; same scores asserted (max |diff| < 1e-9).\n\n{table}\n\n"
        "- *per-sample s* / *batched s*: the whole reward (answer extraction, box parsing, scoring).\n"
        "- *parse s*: the robust per-string parser alone (answer rule, JSON, box clean-up, canonical order), "
        "which the per-sample side uses; the batched reward reads these well-formed answers through its "
        "batch fast path instead (same boxes, checked by `tests/rewards/test_detection_fastpath.py`).\n"
        "- *geometry*: deduplication, IoU matrices, matching and scoring only, on the parsed boxes: "
        "Python loops + one `linear_sum_assignment` per completion vs `rewards.matching.score_detections`.\n"
        f"Each figure is the median of {args.runs} runs (`OMP_WAIT_POLICY=PASSIVE`); the batched formula "
        "itself is the *geometry speedup*.\n"
    )


if __name__ == "__main__":
    main()
