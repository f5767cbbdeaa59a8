"""The batch fast path of `detection` (answer rule, box parsing, make_box, canonical order) gives
exactly what the robust per-string path gives, on well-formed, subtly malformed and hostile answers."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch

import rewards
from rewards.boxes import Box, clean_boxes, fast_parse, parse_boxes
from rewards.detection import _LabelIds, canonical_order
from rewards.matching import score_detections
from rewards.parsing import extract_answer, fast_answer, normalize_label

FRAME = (640.0, 480.0)
LABELS = ["dog", "cat", "traffic light", "Person", "a bird", "", " ", "ÉCOLE", "狗", "x_y-z", "The Car.", "1"]


def _num(rng: random.Random) -> object:
    r = rng.random()
    if r < 0.4:
        return round(rng.uniform(-50, 700), rng.choice([0, 1, 2, 3]))
    if r < 0.7:
        return rng.randint(-20, 700)
    if r < 0.75:
        return rng.choice([0, 0.0, -0.0, 1e-7, 123456789012345678, 1e300, 2.5e-320, 0.1 + 0.2])
    return rng.uniform(-100, 800)


def _entry(rng: random.Random) -> dict:
    d: dict = {"bbox_2d": [_num(rng) for _ in range(4)]}
    if rng.random() < 0.9:
        d["label"] = rng.choice(LABELS)
    if rng.random() < 0.6:
        d[rng.choice(["score", "score", "confidence", "conf"])] = rng.choice(
            [round(rng.random(), 3), rng.uniform(-1, 2), 1, 0, 5, -0.0]
        )
    return d


def _well_formed(rng: random.Random) -> str:
    k = rng.choice([0, 1, 2, 5, 10, 30])
    r = rng.random()
    if r < 0.6:
        entries = [_entry(rng) for _ in range(k)]
        if entries and rng.random() < 0.5:  # one shape per answer, as models write them
            keys = list(entries[0])
            entries = [
                {key: e.get(key, 1) if key != "label" else e.get(key, "dog") for key in keys} for e in entries
            ]
        return json.dumps(entries, ensure_ascii=rng.random() < 0.5)
    if r < 0.85:
        return json.dumps([[_num(rng) for _ in range(4)] for _ in range(k)])
    return json.dumps([_num(rng) for _ in range(4)])


MUTATIONS = [
    lambda s: s.replace(", ", ","),
    lambda s: s.replace(": ", ":"),
    lambda s: s.replace(", ", ",\n  ", 1),
    lambda s: "```json\n" + s + "\n```",
    lambda s: s.replace("1", "01", 1),
    lambda s: s.replace("0.", ".", 1),
    lambda s: s.replace(".5", ".", 1),
    lambda s: s.replace("2", "+2", 1),
    lambda s: s.replace("3", "3e", 1),
    lambda s: s.replace("4", "4e+1", 1),
    lambda s: s.replace("5", "5E-2", 1),
    lambda s: s.replace("6", "-0", 1),
    lambda s: s.replace("7", "NaN", 1),
    lambda s: s.replace("8", "Infinity", 1),
    lambda s: s.replace("9", "-Infinity", 1),
    lambda s: s.replace("1", "1e400", 1),
    lambda s: s.replace("1", "1" * 400, 1),
    lambda s: s.replace("1", "1" * 5000, 1),
    lambda s: s.replace("1", "1" * 25, 1),
    lambda s: s.replace("1", "1.00000000000000000000000001", 1),
    lambda s: s.replace("2", "٢", 1),
    lambda s: s.replace("3", "3_0", 1),
    lambda s: s.replace("4", "4.5.6", 1),
    lambda s: s.replace("5", "--5", 1),
    lambda s: s.replace("5", "- 5", 1),
    lambda s: s.replace("]", "", 1),
    lambda s: s[:-1],
    lambda s: s[:-2],
    lambda s: s + ",",
    lambda s: s.replace("}", ", }", 1),
    lambda s: s.replace("}]", "},]", 1),
    lambda s: s.replace('"label"', '"name"', 1),
    lambda s: s.replace('"label"', '"label", "label"', 1),
    lambda s: s.replace('"bbox_2d"', '"bbox"', 1),
    lambda s: s.replace('"score"', '"extra": 1, "score"', 1),
    lambda s: s.replace('"dog"', '"d\\"og"', 1),
    lambda s: s.replace('"dog"', '"d\\u00e9og"', 1),
    lambda s: s.replace('"dog"', '"do\ng"', 1),
    lambda s: s.replace('"dog"', '"do\tg"', 1),
    lambda s: s.replace('"dog"', '"do\x00g"', 1),
    lambda s: s.replace('"dog"', '"do\\\\g"', 1),
    lambda s: s.replace('"dog"', "null", 1),
    lambda s: s.replace('"dog"', "7", 1),
    lambda s: s.replace('"dog"', '"\u200bdog\u202e"', 1),
    lambda s: s.replace('"cat"', '"c]a}t, {"', 1),
    lambda s: s.replace('"cat"', '"cat\\ud800"', 1),
    lambda s: s.replace("[", "[[", 1),
    lambda s: s.replace(", ", ", ", 1),
    lambda s: s.replace(", ", "\u00a0, ", 1),
    lambda s: s.replace(" ", "\t", 1),
    lambda s: s.replace('"', "'"),
    lambda s: s.replace("{", "{{", 1),
    lambda s: "[" + s + "]",
    lambda s: s.replace("[", "(").replace("]", ")"),
    lambda s: "The boxes are " + s,
    lambda s: s[1:-1],
    lambda s: s.replace('"score": ', '"score": "', 1),
    lambda s: s.upper(),
]


def _answers(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = _well_formed(rng)
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            s = rng.choice(MUTATIONS)(s)
        out.append(s)
    out += [
        "[]",
        "[ ]",
        "null",
        "none",
        "[[]]",
        "[{}]",
        "[1, 2, 3]",
        "[1, 2, 3, 4, 5]",
        "[[1, 2, 3, 4], [5, 6, 7]]",
        '["1", "2", "3", "4"]',
        "[true, 1, 2, 3]",
        json.dumps([{"bbox_2d": [1, 2, 3, 4], "label": "dog"}] * 10_000),
        json.dumps([[i, i, i + 5, i + 5] for i in range(10_000)]),
        json.dumps([{"bbox_2d": [1, 2, 3, 4], "label": "dog", "score": 0.5}] * 101),
        "[" * 50_000 + "]" * 50_000,
        '[{"bbox_2d": [1e308, -1e308, 1e309, 2], "label": "dog", "score": 1e999}]',
        '[{"bbox_2d": [700, 500, 800, 600], "label": "dog"}]',
        '[{"bbox_2d": [-10, -10, -5, -5], "label": "dog"}]',
        '[{"bbox_2d": [-0.0, -0.0, 0.0, 0.0], "label": "dog", "score": -0.0}]',
    ]
    return out


def _robust(answer: str, frame, max_boxes: int):
    return parse_boxes(answer, frame, max_boxes=max_boxes)


def _fast_boxes(answers: list[str], frame) -> list[list[Box] | None]:
    """The fast path's boxes per answer, in the order written (None where it does not take one)."""
    fb = fast_parse(answers)
    n = len(fb.labels)
    w = np.full(n, frame[0] if frame else math.inf)
    h = np.full(n, frame[1] if frame else math.inf)
    xyxy, conf, valid, _ = clean_boxes(fb.coords, fb.scores, w, h)
    out: list[list[Box] | None] = []
    at = 0
    for k in fb.counts:
        if k < 0:
            out.append(None)
            continue
        got = []
        for j in range(at, at + k):
            if not valid[j]:
                got.append(Box(0.0, 0.0, 0.0, 0.0, None, None, False))
                continue
            lab = fb.labels[j]
            label = (normalize_label(lab) or None) if lab is not None else None
            c = None if math.isnan(conf[j]) else float(conf[j])
            got.append(Box(*(float(v) for v in xyxy[j]), label, c, True))
        out.append(got)
        at += k
    return out


def _same(a: Box, b: Box) -> bool:
    """Equal, including the sign of zero and None against a value."""
    return len(a) == len(b) and all(
        (x is None and y is None) or (x is not None and y is not None and repr(x) == repr(y))
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize("frame", [FRAME, None, (1000.0, 1000.0)])
def test_fast_parse_equals_parse_boxes(frame):
    answers = _answers(0, 3000)
    fast = _fast_boxes(answers, frame)
    taken = 0
    for answer, got in zip(answers, fast):
        if got is None:
            continue
        taken += 1
        want = _robust(answer, frame, max_boxes=10**9)
        assert want.ok, answer[:200]
        assert len(got) == len(want.boxes), answer[:200]
        for g, w in zip(got, want.boxes):
            assert _same(g, w), (answer[:200], g, w)
    assert taken > 500  # the fast path takes the well-formed majority
    assert taken < len(answers)  # and leaves the malformed ones


def test_fast_path_takes_only_exact_shapes():
    # spacing, fences, escapes, other keys, non-JSON numbers: left to the robust parser
    for s in [
        '[{"bbox_2d":[1, 2, 3, 4], "label": "dog"}]',
        '```json\n[{"bbox_2d": [1, 2, 3, 4], "label": "dog"}]\n```',
        '[{"bbox_2d": [1, 2, 3, 4], "label": "d\\"og"}]',
        '[{"bbox_2d": [1, 2, 3, 4], "name": "dog"}]',
        '[{"bbox_2d": [01, 2, 3, 4], "label": "dog"}]',
        '[{"bbox_2d": [NaN, 2, 3, 4], "label": "dog"}]',
        '[{"bbox_2d": [-0, 2, 3, 4], "label": "dog"}]',
        "[[1, 2, 3, 4],[5, 6, 7, 8]]",
        "[1, 2, 3]",
    ]:
        assert fast_parse([s]).counts == [-1], s
    assert fast_parse(['[{"bbox_2d": [1, 2, 3, 4], "label": "dog", "score": 0.5}]', "[]"]).counts == [1, 0]


COMPLETIONS = [
    "<think>hm</think><answer>[1, 2, 3, 4]</answer>",
    "<think>hm</think>\n<answer> [1, 2, 3, 4] </answer>\n",
    "pre <think>hm</think> mid <answer>[]</answer> post",
    "<answer>[1, 2, 3, 4]</answer>",
    "[1, 2, 3, 4]",
    "  [1, 2, 3, 4]  ",
    "",
    "   ",
    "<answer></answer>",
    "<answer> </answer>",
    "<think><answer>[1, 2, 3, 4]</answer></think>",
    "<answer>[1, 2, 3, 4]</answer><think>x</think>",
    "<think>x</think><answer>a</answer><answer>b</answer>",
    "<THINK>x</THINK><ANSWER>[1, 2, 3, 4]</ANSWER>",
    "<think>x</think><answer>[1, 2, 3, 4]<|im_end|></answer>",
    "<answer>[1, 2, 3, 4]</answer><|im_end|>",
    "<think>x<answer>[9, 9, 9, 9]</answer></think><answer>[1, 2, 3, 4]</answer>",
    "</think><answer>[1, 2, 3, 4]</answer>",
    "<think>unclosed <answer>[1, 2, 3, 4]</answer>",
    "<answer>[1, 2, 3, 4]",
    "[1, 2, 3, 4]</answer>",
    "<answer>1 < 2</answer>",
    "<think>a</think><think>b</think><answer>[1, 2, 3, 4]</answer>",
    "<think>a</think>b</think><answer>[1, 2, 3, 4]</answer>",
    "<answer>" + "x" * 300_000 + "</answer>",
    "x" * 300_000,
    "<answer>\u200b[1, 2, 3, 4]\u3000</answer>",
]


def test_fast_answer_equals_extract_answer():
    rng = random.Random(1)
    extra = []
    for _ in range(2000):
        parts = [
            rng.choice(
                ["<think>", "</think>", "<answer>", "</answer>", "<|im_end|>", "<", " x ", "[1]", "\n"]
            )
            for _ in range(rng.randint(0, 6))
        ]
        extra.append("".join(parts))
    taken = 0
    for c in COMPLETIONS + extra:
        got = fast_answer(c)
        if got is not None:
            taken += 1
            assert got == extract_answer(c).text, c[:200]
    assert taken > 10
    assert fast_answer(None) is None  # type: ignore[arg-type]


def _robust_detection(completions, sols, frame, max_boxes=100, **params):
    """The detection reward through the robust per-string parser (the pre-fast-path code)."""
    ids = _LabelIds({})
    preds, gts, failed = [], [], []
    for c, sol in zip(completions, sols):
        gts.append([(*b, ids(lab)) for b, lab in zip(sol["boxes"], sol["labels"])])
        parsed = parse_boxes(extract_answer(c).text, frame, max_boxes=max_boxes)
        failed.append(not parsed.ok)
        preds.append(
            [
                (b.x1, b.y1, b.x2, b.y2, ids(b.label), 1.0 if b.score is None else b.score)
                for b in canonical_order(parsed.boxes)
            ]
            if parsed.ok
            else []
        )
    scores, _ = score_detections(
        preds,
        gts,
        [False] * len(preds),
        params.get("score", "mean_iou"),
        0.5,
        0.95,
        params.get("confidence_weight", 0.0),
        torch.device("cpu"),
        [frame] * len(preds),
    )
    return [0.0 if f else float(v) for f, v in zip(failed, scores.tolist())]


@pytest.mark.parametrize("params", [{}, {"score": "f1"}, {"confidence_weight": 0.3}])
def test_detection_scores_unchanged(params):
    rng = random.Random(2)
    answers = _answers(3, 1500)
    completions = [
        rng.choice(
            ["<think>x</think><answer>{}</answer>", "<answer>{}</answer>", "{}", "<think>x</think>{}"]
        ).format(a)
        for a in answers
    ]
    sols = []
    for _ in completions:
        k = rng.choice([0, 1, 3, 10])
        boxes = []
        for _ in range(k):
            x, y = rng.uniform(0, 500), rng.uniform(0, 400)
            boxes.append([x, y, x + rng.uniform(5, 200), y + rng.uniform(5, 200)])
        sols.append({"boxes": boxes, "labels": [rng.choice(LABELS[:5]) for _ in boxes]})
    det = rewards.get("detection")
    got = det(
        completions, solution=sols, task=["detection"] * len(sols), image_size=[FRAME] * len(sols), **params
    )
    want = _robust_detection(completions, sols, FRAME, **params)
    assert list(got) == want  # exactly, not approximately


def test_metrics_and_scores_match_with_fast_path_off(monkeypatch):
    rng = random.Random(4)
    answers = _answers(5, 1500)
    completions = [f"<think>x</think><answer>{a}</answer>" for a in answers]
    sols = [
        {"boxes": [[10, 10, 100, 100], [200, 200, 300, 260]], "labels": ["dog", "cat"]} for _ in completions
    ]
    cols = dict(solution=sols, task=["detection"] * len(sols), image_size=[FRAME] * len(sols))
    det = rewards.get("detection")
    for params in ({}, {"score": "f1", "confidence_weight": 0.5, "max_boxes": 20}):
        fast = det(completions, **cols, **params)
        rng.shuffle(completions)  # batch order does not matter either
        fast_shuffled = det(completions, **cols, **params)
        with monkeypatch.context() as m:
            m.setattr("rewards.detection.fast_answer", lambda text: None)  # everything through parse_boxes
            slow_shuffled = det(completions, **cols, **params)
        assert list(fast_shuffled) == list(slow_shuffled)
        assert fast_shuffled.metrics == slow_shuffled.metrics
        assert sorted(fast) == sorted(fast_shuffled)


def test_canonical_order_ties(monkeypatch):
    """Boxes that tie on confidence (or on everything but one coordinate or the label) keep the
    per-string canonical order exactly."""
    rng = random.Random(6)
    completions = []
    for _ in range(400):
        base = [rng.choice([0, 10, 10.0, -0.0]) for _ in range(4)]
        entries = []
        for _ in range(rng.randint(1, 12)):
            box = list(base)
            box[rng.randrange(4)] = rng.choice([0, 5, 10, 20, -0.0, 700])
            e = {"bbox_2d": box, "label": rng.choice(["dog", "Dog", "cat", "", "a dog"])}
            if rng.random() < 0.5:
                e["score"] = rng.choice([0.5, 1, 2, -1, 0.0, -0.0])
            entries.append(e)
        keys = list(entries[0])
        entries = [{k: e.get(k, 0.5) for k in keys} for e in entries]
        completions.append(f"<answer>{json.dumps(entries)}</answer>")
    sols = [{"boxes": [[0, 0, 10, 10], [5, 5, 20, 20]], "labels": ["dog", "cat"]} for _ in completions]
    cols = dict(solution=sols, task=["detection"] * len(sols), image_size=[FRAME] * len(sols))
    det = rewards.get("detection")
    assert all(k >= 0 for k in fast_parse([extract_answer(c).text for c in completions]).counts)
    for params in ({}, {"score": "f1"}, {"confidence_weight": 0.7, "dedup_iou": 0.5}):
        fast = det(completions, **cols, **params)
        with monkeypatch.context() as m:
            m.setattr("rewards.detection.fast_answer", lambda text: None)
            slow = det(completions, **cols, **params)
        assert list(fast) == list(slow)
        assert fast.metrics == slow.metrics
    # and the rows themselves, bit for bit (order, sign of zero, label ids, confidences)
    from rewards import detection as D
    from rewards.result import MetricCounter

    texts = completions + [f"<answer>{a}</answer>" for a in _answers(7, 500)]
    frames = [FRAME] * len(texts)

    def rows():
        counter = MetricCounter("parse_fail", "too_many_boxes", "invalid_box", "fixed_box", "unlabeled_box")
        ids = _LabelIds({})
        boxes, counts, failed = D._parse_predictions(texts, frames, 100, ids, counter)
        names = {v: k for k, v in ids.ids.items()} | {-1: None}  # ids are numbered as met: compare names
        labels = [[names[int(v)] for v in row[:k, 4]] for row, k in zip(boxes, counts)]
        return (
            boxes[..., [0, 1, 2, 3, 5]].tobytes(),
            labels,
            counts.tolist(),
            failed.tolist(),
            counter._counts,
        )

    fast_rows = rows()
    monkeypatch.setattr("rewards.detection.fast_answer", lambda text: None)
    assert fast_rows == rows()
