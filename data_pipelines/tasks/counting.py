"""counting: how many objects (a non-negative integer)."""

from __future__ import annotations

from data_pipelines.errors import fail
from data_pipelines.tasks.base import TaskSpec, register_task


def check(solution: dict) -> None:
    count = solution["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        fail("bad_type", f"solution.count must be a non-negative integer, got {count!r}")


SPEC = register_task(
    TaskSpec(
        name="counting",
        solution_keys=(("count",),),
        check=check,
        answer=lambda sol: str(int(sol["count"])),
        caption=lambda sample: f"count: {sample.solution['count']}",
        default_rewards=("counting",),
        eval_family="counting",
        example={"count": 3},
        synthetic="shapes",
    )
)
