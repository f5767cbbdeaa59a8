"""`detection`: Hungarian matching, false positives and misses penalised, order-independent, no crashes."""

import json
import random

import pytest
import torch

import rewards
from rewards.matching import reference_score, score_detections

det = rewards.get("detection")
DOG = {"boxes": [[0, 0, 10, 10]], "labels": ["dog"]}
NONE = {"boxes": [], "labels": []}
SIZE = (100, 100)


def js(*objs):
    return json.dumps([{"bbox_2d": list(b), **({"label": lab} if lab else {}), **kw} for b, lab, kw in objs])


def score(completion, solution=DOG, **kw):
    return det([completion], solution=[solution], image_size=[SIZE], task=["detection"], **kw)[0]


FALSE = [((20 + 7 * k, 20, 25 + 7 * k, 25), "dog", {}) for k in range(10)]
CORRECT = ((0, 0, 10, 10), "dog", {})


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        pytest.param(js(CORRECT), DOG, 1.0, id="exact"),
        # ten false boxes: matched IoU 1 over max(11, 1) boxes
        pytest.param(js(CORRECT, *FALSE), DOG, 1 / 11, id="ten_false_boxes_penalised"),
        pytest.param(js(*FALSE, CORRECT), DOG, 1 / 11, id="order_independent"),
        pytest.param(js(CORRECT, CORRECT, CORRECT), DOG, 1.0, id="duplicates_removed"),
        pytest.param(js(((0, 0, 10, 10), None, {})), DOG, 0.0, id="box_without_label_is_false_positive"),
        pytest.param(js(((0, 0, 10, 10), "cat", {})), DOG, 0.0, id="wrong_label"),
        pytest.param(js(((0, 0, 10, 10), "Dog.", {})), DOG, 1.0, id="label_normalised"),
        pytest.param("[]", NONE, 1.0, id="correct_no_objects"),
        pytest.param("There are no objects.", NONE, 1.0, id="correct_no_objects_in_words"),
        pytest.param(js(CORRECT), NONE, 0.0, id="boxes_when_none"),
        pytest.param("[]", DOG, 0.0, id="missed_everything"),
        pytest.param("", DOG, 0.0, id="empty_answer"),
        pytest.param("", NONE, 0.0, id="empty_answer_is_not_no_objects"),
        pytest.param(
            "<think>" + js(CORRECT) + "</think><answer>[]</answer>", DOG, 0.0, id="boxes_in_reasoning"
        ),
        pytest.param('[{"bbox_2d": [0, 0, NaN, 10], "label": "dog"}]', DOG, 0.0, id="nan_box"),
        # one good box plus one malformed entry: the malformed one is a false positive -> 1 / 2
        pytest.param(
            '[{"bbox_2d": [0, 0, 10, 10], "label": "dog"}, {"bbox_2d": [1]}]', DOG, 0.5, id="junk_not_free"
        ),
        pytest.param(js(((10, 10, 0, 0), "dog", {})), DOG, 1.0, id="reversed_box"),
        pytest.param(js(((-5, -5, 10, 10), "dog", {})), DOG, 1.0, id="negative_clipped"),
    ],
)
def test_pathologies(completion, solution, expected):
    assert score(completion, solution) == pytest.approx(expected)


def test_hungarian_not_greedy():
    # gt A=[0,10], B=[10,20] (x; y 0-10). p0=[2,12]: IoU(A)=8/12, IoU(B)=2/18. p1=[0,8]: IoU(A)=0.8.
    # Taking p0-A first (its best) leaves p1 unmatched: 0.667. Optimum: p1-A + p0-B = 0.8 + 0.111.
    sol = {"boxes": [[0, 0, 10, 10], [10, 0, 20, 10]], "labels": ["x", "x"]}
    comp = js(((2, 0, 12, 10), "x", {}), ((0, 0, 8, 10), "x", {}))
    assert score(comp, sol) == pytest.approx((0.8 + 2 / 18) / 2)


def test_f1_mode():
    # 1 TP of 3 predictions and 2 ground truths: 2 * 1 / (3 + 2)
    sol = {"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]], "labels": ["dog", "dog"]}
    comp = js(CORRECT, FALSE[0], FALSE[1])
    assert score(comp, sol, score="f1") == pytest.approx(2 / 5)
    assert score(js(((5, 0, 15, 10), "dog", {})), DOG, score="f1") == 0.0  # IoU 1/3 < 0.5


def test_confidence_is_proper_and_false_boxes_are_not_free():
    w = 0.5
    right = score(js(((0, 0, 10, 10), "dog", {"score": 0.9})), DOG, confidence_weight=w)
    # geometry 1; confidence 1 - 0.1^2 = 0.99 -> 0.5 + 0.5 * 0.99
    assert right == pytest.approx(0.995)
    # a wrong extra box at confidence 0 adds no credit and raises the denominator: geometry 1/2,
    # calib (0.99 + 0) / 2 -> lower than without it
    extra = score(
        js(((0, 0, 10, 10), "dog", {"score": 0.9}), ((50, 50, 60, 60), "dog", {"score": 0.0})),
        DOG,
        confidence_weight=w,
    )
    assert extra == pytest.approx(0.5 * 0.5 + 0.5 * 0.99 / 2)
    assert extra < right
    # a missing confidence means certainty (1.0)
    assert score(js(CORRECT), DOG, confidence_weight=w) == pytest.approx(1.0)


def test_box_count_capped():
    many = js(*[((k, k, k + 1, k + 1), "dog", {}) for k in range(101)])
    out = det([many], solution=[DOG], task=["detection"], max_boxes=100)
    assert out == [0.0] and out.metrics["too_many_boxes"] == 1.0


def test_class_agnostic_and_applicability():
    sols = [{"boxes": [[0, 0, 10, 10]]}, {"label": "cat"}, {"boxes": [[0, 0, 10, 10]] * 2}]
    out = det(
        ["[0, 0, 10, 10]", "cat", "[0, 0, 10, 10]"],
        solution=sols,
        task=["detection", "classification", "tracking"],
    )
    assert out == [1.0, None, None]


def test_bad_solution_names_record():
    with pytest.raises(ValueError, match="record 'r1'.*2 boxes but 1 labels"):
        det(["[]"], solution=[{"boxes": [[0, 0, 1, 1]] * 2, "labels": ["a"]}], task=["detection"], id=["r1"])


def _random_case(rng):
    gts = [
        (
            x := rng.uniform(0, 80),
            y := rng.uniform(0, 80),
            x + rng.uniform(1, 20),
            y + rng.uniform(1, 20),
            rng.randrange(3),
        )
        for _ in range(rng.randrange(0, 6))
    ]
    preds = []
    for _ in range(rng.randrange(0, 8)):
        if gts and rng.random() < 0.6:
            g = rng.choice(gts)
            j = [rng.uniform(-4, 4) for _ in range(4)]
            box = (g[0] + j[0], g[1] + j[1], max(g[0] + j[0], g[2] + j[2]), max(g[1] + j[1], g[3] + j[3]))
            lab = g[4] if rng.random() < 0.8 else rng.randrange(-1, 3)
        else:
            x, y = rng.uniform(0, 80), rng.uniform(0, 80)
            box, lab = (x, y, x + rng.uniform(1, 20), y + rng.uniform(1, 20)), rng.randrange(3)
        preds.append((*box, lab, rng.random()))
        if rng.random() < 0.2:
            preds.append(preds[-1])  # exact duplicate
    preds.sort(key=lambda p: (-p[5], p[:4], p[4]))
    return preds, gts, rng.random() < 0.2


@pytest.mark.parametrize("mode, conf_w", [("mean_iou", 0.0), ("f1", 0.0), ("mean_iou", 0.3), ("f1", 0.5)])
def test_batched_equals_per_sample_reference(mode, conf_w):
    rng = random.Random(0)
    cases = [_random_case(rng) for _ in range(300)]
    preds, gts, agn = zip(*cases)
    batched, _ = score_detections(preds, gts, agn, mode, 0.5, 0.95, conf_w, torch.device("cpu"))
    ref = [reference_score(p, g, a, mode, 0.5, 0.95, conf_w) for p, g, a in cases]
    assert batched.tolist() == pytest.approx(ref, abs=1e-9)


def test_order_invariance_of_whole_reward_random():
    rng = random.Random(1)
    objs = [
        (
            (rng.uniform(0, 50), rng.uniform(0, 50), rng.uniform(50, 99), rng.uniform(50, 99)),
            rng.choice("ab"),
            {"score": rng.random()},
        )
        for _ in range(8)
    ]
    sol = {"boxes": [list(o[0]) for o in objs[:4]], "labels": [o[1] for o in objs[:4]]}
    base = score(js(*objs), sol, confidence_weight=0.3)
    for _ in range(5):
        rng.shuffle(objs)
        assert score(js(*objs), sol, confidence_weight=0.3) == pytest.approx(base, abs=1e-12)


def test_bad_ground_truth_is_reported_whatever_the_model_wrote():
    sol = {"boxes": [[0, 0, 1, float("nan")]], "labels": ["a"]}
    for completion in ["[]", "garbage", ""]:
        with pytest.raises(ValueError, match="record 'g1': solution box 0 must be 4 finite numbers"):
            det([completion], solution=[sol], task=["detection"], id=["g1"])


def test_parse_failure_on_empty_ground_truth_scores_zero():
    out = det(["garbage", "[]"], solution=[NONE, NONE], task=["detection"] * 2)
    assert out == [0.0, 1.0] and out.metrics["parse_fail"] == 1.0
