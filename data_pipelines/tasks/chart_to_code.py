"""chart_to_code: matplotlib code that redraws a chart image (chart-to-code RL); the solution holds the
reference ``code`` and/or the reference rendering ``image`` (a path, resolved like the record's
images)."""

from __future__ import annotations

from data_pipelines.errors import fail
from data_pipelines.tasks.base import TaskSpec, register_task


def check(solution: dict) -> None:
    for key in ("code", "image"):
        if solution.get(key) is not None and not isinstance(solution[key], str):
            fail("bad_type", f"solution.{key} must be a string")


def answer(sol: dict) -> str | None:
    return f"```python\n{sol['code']}\n```" if "code" in sol else None


SPEC = register_task(
    TaskSpec(
        name="chart_to_code",
        solution_keys=(("code",), ("image",)),
        check=check,
        answer=answer,
        caption=lambda sample: f"code: {len(sample.solution.get('code', ''))} chars",
        default_rewards=("chart_render",),
        eval_family="chart_to_code",
        example={"code": "import matplotlib.pyplot as plt\nplt.bar([1, 2], [3, 4])"},
        path_keys=("image",),
        synthetic="charts",
    )
)
