"""detection: every box of the asked categories, with labels (COCO / LVIS, Visual-RFT); empty lists
mean "no objects"."""

from __future__ import annotations

import json

from data_pipelines.errors import box_error, fail
from data_pipelines.geometry import check_box
from data_pipelines.tasks.base import TaskSpec, box_json, register_task


def check(solution: dict) -> None:
    boxes, labels = solution["boxes"], solution["labels"]
    if not isinstance(boxes, list) or not isinstance(labels, list):
        fail("bad_type", "solution.boxes and solution.labels must be lists")
    if len(boxes) != len(labels):
        fail("length_mismatch", f"solution has {len(boxes)} boxes but {len(labels)} labels")
    for k, (box, label) in enumerate(zip(boxes, labels)):
        reason = check_box(box, None)
        if reason:
            box_error(f"solution.boxes[{k}]", box, reason)
        if not isinstance(label, str) or not label.strip():
            fail("empty_label", f"solution.labels[{k}] is empty or not a string")


def answer(sol: dict) -> str:
    return json.dumps([{"bbox_2d": box_json(b), "label": lab} for b, lab in zip(sol["boxes"], sol["labels"])])


def caption(sample) -> str:
    sol = sample.solution
    return f"{len(sol['boxes'])} boxes: {', '.join(sorted(set(sol['labels']))) or 'no objects'}"


SPEC = register_task(
    TaskSpec(
        name="detection",
        solution_keys=(("boxes", "labels"),),
        check=check,
        answer=answer,
        caption=caption,
        default_rewards=("detection",),
        eval_family="detection",
        example={"boxes": [[10, 20, 60, 80], [70, 10, 100, 50]], "labels": ["dog", "cat"]},
        label_answers=False,  # the answer is the labelled boxes, never a stray `label`
        draw_boxes=lambda sol: (sol["boxes"], sol["labels"]),
        synthetic="shapes",
    )
)
