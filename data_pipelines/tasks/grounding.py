"""grounding: the one box a phrase refers to (RefCOCO, VLM-R1)."""

from __future__ import annotations

import json

from data_pipelines.errors import box_error
from data_pipelines.geometry import check_box
from data_pipelines.tasks.base import TaskSpec, box_json, register_task


def check(solution: dict) -> None:
    reason = check_box(solution["box"], None)
    if reason:
        box_error("solution.box", solution["box"], reason)


def caption(sample) -> str:
    return "box: [" + ", ".join(f"{v:.0f}" for v in sample.solution["box"]) + "]"


SPEC = register_task(
    TaskSpec(
        name="grounding",
        solution_keys=(("box",),),
        check=check,
        answer=lambda sol: json.dumps({"bbox_2d": box_json(sol["box"])}),
        caption=caption,
        default_rewards=("iou",),
        eval_family="grounding",
        example={"box": [10, 20, 60, 80]},
        draw_boxes=lambda sol: ([sol["box"]], None),
        synthetic="shapes",
    )
)
