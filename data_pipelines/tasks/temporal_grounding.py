"""temporal_grounding: the [start, end] seconds of a described moment in a video (Charades-STA,
ActivityNet, VideoChat-R1)."""

from __future__ import annotations

from data_pipelines.errors import check_segment, fail, is_number
from data_pipelines.geometry import is_finite_number
from data_pipelines.tasks.base import TaskSpec, fmt_seconds, register_task


def check(solution: dict) -> None:
    check_segment(solution["segment"])
    dur = solution.get("duration")
    if dur is not None and not is_number(dur):
        fail("bad_type", f"solution.duration must be a positive number of seconds, got {dur!r}")
    if dur is not None and not is_finite_number(dur):
        fail("non_finite", f"solution.duration {dur!r} is NaN or infinite")
    if dur is not None and dur <= 0:
        fail("bad_type", f"solution.duration must be a positive number of seconds, got {dur!r}")


def answer(sol: dict) -> str:
    s, e = sol["segment"]
    return f"{fmt_seconds(s)} to {fmt_seconds(e)}"


def caption(sample) -> str:
    s, e = sample.solution["segment"]
    return f"segment {s:.1f}-{e:.1f} s of {sample.video.duration:.1f} s" if sample.video else f"{s}-{e} s"


SPEC = register_task(
    TaskSpec(
        name="temporal_grounding",
        solution_keys=(("segment",),),
        check=check,
        answer=answer,
        caption=caption,
        default_rewards=("temporal_iou",),
        eval_family="temporal_grounding",
        example={"segment": [1.5, 4.0], "duration": 8.0},
        needs_video=True,
        draw_segment=lambda sol: (sol["segment"][0], sol["segment"][1]),
        synthetic="video",
    )
)
