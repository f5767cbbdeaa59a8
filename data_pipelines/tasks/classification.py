"""classification: one label, optionally from a closed set of ``choices`` (Visual-RFT, CLS-RL)."""

from __future__ import annotations

from data_pipelines.errors import fail
from data_pipelines.tasks.base import TaskSpec, register_task


def check(solution: dict) -> None:
    label = solution["label"]
    if not isinstance(label, str):
        fail("bad_type", f"solution.label must be a string, got {type(label).__name__}")
    if not label.strip():
        fail("empty_label", "solution.label is empty")
    choices = solution.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
            fail("bad_type", "solution.choices must be a list of non-empty strings")
        if label not in choices:
            fail("label_not_in_choices", f"solution.label {label!r} is not one of choices {choices}")


SPEC = register_task(
    TaskSpec(
        name="classification",
        solution_keys=(("label",),),
        check=check,
        answer=lambda sol: str(sol["label"]),
        caption=lambda sample: f"label: {sample.solution['label']}",
        default_rewards=("accuracy",),
        eval_family="classification",
        example={"label": "cat", "choices": ["dog", "cat"]},
        synthetic="shapes",
    )
)
