"""Geometry rewards give the same scores on the trainer's device as on CPU (GPU-only; skipped without CUDA)."""

import json
import random

import pytest
import torch

import rewards

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: scores on a cuda device vs CPU"),
]


def _detection_batch(n=200, seed=0):
    rng = random.Random(seed)
    comps, sols = [], []
    for _ in range(n):
        gt = [
            [
                x := rng.uniform(0, 300),
                y := rng.uniform(0, 300),
                x + rng.uniform(5, 80),
                y + rng.uniform(5, 80),
            ]
            for _ in range(rng.randrange(0, 6))
        ]
        labels = [rng.choice("ab") for _ in gt]
        preds = [
            {"bbox_2d": [c + rng.uniform(-5, 5) for c in b], "label": lab, "score": rng.random()}
            for b, lab in zip(gt, labels)
            if rng.random() < 0.8
        ]
        preds += [{"bbox_2d": [10, 10, 50, 50], "label": "a"}] * rng.randrange(0, 3)
        comps.append(json.dumps(preds))
        sols.append({"boxes": gt, "labels": labels})
    return comps, {"solution": sols, "task": ["detection"] * n, "image_size": [(400, 400)] * n}


@pytest.mark.parametrize("params", [{}, {"score": "f1"}, {"confidence_weight": 0.3}])
def test_detection_cuda_matches_cpu(params):
    comps, cols = _detection_batch()
    det = rewards.get("detection")
    assert det(comps, **cols, **params, device="cuda") == pytest.approx(
        det(comps, **cols, **params), abs=1e-9
    )


def test_paired_rewards_cuda_match_cpu():
    cases = [
        ("iou", ["[0, 0, 10, 10]", "[5, 0, 15, 10]"], [{"box": [0, 0, 10, 10]}] * 2, {}),
        (
            "temporal_iou",
            ["1 to 3", "2 to 5"],
            [{"segment": [1, 3], "duration": 10}] * 2,
            {"variant": "iou_v2"},
        ),
        ("tracking", ["[[0, 0, 5, 5], null]", "[[1, 1, 5, 5]]"], [{"boxes": [[0, 0, 5, 5], None]}] * 2, {}),
    ]
    for name, comps, sols, params in cases:
        fn = rewards.get(name)
        task = ["tracking"] * 2 if name == "tracking" else ["x"] * 2
        cpu = fn(comps, solution=sols, task=task, **params)
        gpu = fn(comps, solution=sols, task=task, device=torch.device("cuda"), **params)
        assert gpu == pytest.approx(cpu), name
