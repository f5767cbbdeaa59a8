"""tracking: the object's box in every sampled frame (null where it is not visible; VideoChat-R1).
``times`` (seconds of each box) lets the loader pick the box nearest each sampled frame."""

from __future__ import annotations

from data_pipelines.errors import box_error, fail, is_number
from data_pipelines.geometry import check_box, is_finite_number
from data_pipelines.tasks.base import TaskSpec, register_task


def check(solution: dict) -> None:
    boxes = solution["boxes"]
    if not isinstance(boxes, list) or not boxes:
        fail("bad_type", "solution.boxes must be a non-empty list of xyxy boxes (null: not visible)")
    times = solution.get("times")
    if times is not None and (
        not isinstance(times, list) or len(times) != len(boxes) or not all(is_number(t) for t in times)
    ):
        fail("bad_type", f"solution.times must be {len(boxes)} numbers of seconds, one per box")
    if times is not None and not all(is_finite_number(t) for t in times):
        fail("non_finite", "solution.times has a NaN or infinite time")
    for k, box in enumerate(boxes):
        reason = None if box is None else check_box(box, None)
        if reason:
            box_error(f"solution.boxes[{k}]", box, reason)


def caption(sample) -> str:
    boxes = sample.solution["boxes"]
    return f"{sum(b is not None for b in boxes)} boxes over {len(boxes)} frames"


SPEC = register_task(
    TaskSpec(
        name="tracking",
        solution_keys=(("boxes",),),
        check=check,
        answer=None,  # no SFT target is derived: give the records a `response` column
        caption=caption,
        default_rewards=("tracking",),
        eval_family="tracking",
        example={"boxes": [[10, 10, 50, 50], [20, 10, 60, 50], None], "times": [0.0, 0.5, 1.0]},
        needs_video=True,
        per_frame_boxes=True,
        synthetic="video",
    )
)
