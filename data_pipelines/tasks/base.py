"""The task spec: everything the pipeline, the trainer and the evaluation know about one task, in one
place, and the registry that maps a record's ``task`` to it.

A task is one small module under ``data_pipelines/tasks/`` that builds a :class:`TaskSpec` and calls
:func:`register_task`; nothing else in the code names the task (docs/data.md "Adding a task").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # a light module: the CLI builds its parser from the registry
    from data_pipelines.sample import Sample

Solution = dict[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    """One task. Solutions are dicts (DESIGN "Records"); the callables never see the record's files.

    name: the record's ``task`` value.
    solution_keys: key groups of ``solution``; at least one group must be all present (not None).
    check: raises ``RecordError`` unless the solution has the types and values the task needs (called
        after ``solution_keys`` passed; the task-independent checks of every reward key follow it).
    answer: the reference answer of a model-frame solution, in the form the task's reward parses (the
        SFT target inside the answer tags); None: the task has none, records need a ``response`` column.
    caption: the answer in words under a preview tile.
    default_rewards: registry names of the rewards that score the task when no config names any
        (``mmrft eval``, ``mmrft data filter``, the demo). Strings: rewards/ stays independent.
    eval_family: how ``mmrft.evaluation`` parses and scores an answer (one of its families, named like
        the built-in task that introduced it; a new task that reads like ``grounding`` says so here).
    needs_video: records must have a ``video``.
    label_answers: a ``label`` in the solution is the SFT answer, before ``answer`` (a custom record of
        the task that carries a label); False where ``label`` is not the answer.
    path_keys: solution keys holding file paths, resolved against the dataset's folder like ``images``.
    per_frame_boxes: ``solution.boxes`` is a track (one box per frame, ``times`` optional): the loader
        keeps the boxes of the sampled frames, the preview draws them on each frame.
    draw_boxes: (boxes, labels or None) a preview draws on the image, from a model-frame solution.
    draw_segment: the (start_s, end_s) a preview marks under a video's frame strip.
    synthetic: the built-in generator that writes the task (``shapes``, ``video``, ``charts``) for
        ``mmrft data synth``; None when there is none.
    """

    name: str
    solution_keys: tuple[tuple[str, ...], ...]
    check: Callable[[Solution], None]
    answer: Callable[[Solution], str] | None
    caption: Callable[[Sample], str]
    default_rewards: tuple[str, ...]
    eval_family: str
    example: Solution
    needs_video: bool = False
    label_answers: bool = True
    path_keys: tuple[str, ...] = ()
    per_frame_boxes: bool = False
    draw_boxes: Callable[[Solution], tuple[list, list | None]] | None = None
    draw_segment: Callable[[Solution], tuple[float, float]] | None = None
    synthetic: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"TaskSpec.name must be a non-empty string, got {self.name!r}")
        if not self.solution_keys or not all(self.solution_keys):
            raise ValueError(f"task {self.name!r}: solution_keys needs at least one non-empty key group")
        if not self.default_rewards:
            raise ValueError(f"task {self.name!r}: default_rewards needs at least one reward name")


# The registry, in registration order (the order reports list tasks in).
TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec, replace: bool = False) -> TaskSpec:
    """Add ``spec`` to the registry under ``spec.name``; a second spec of one name is an error unless
    ``replace``. Returns the spec."""
    if spec.name in TASKS and not replace:
        raise ValueError(f"task {spec.name!r} is registered already; pass replace=True to override it")
    TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Remove a task (tests that register one put the registry back with this)."""
    TASKS.pop(name, None)


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name``; ``KeyError`` naming the known tasks when there is none."""
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(TASKS)}") from None


def task_names() -> tuple[str, ...]:
    """Every registered task, in registration order."""
    return tuple(TASKS)


def reference_answer(task: str, solution: Solution) -> str | None:
    """The SFT answer of a model-frame ``solution`` of ``task`` (None when the task has none)."""
    spec = get_task(task)
    if spec.label_answers and "label" in solution:
        return str(solution["label"])
    return spec.answer(solution) if spec.answer is not None else None


def fmt_seconds(v: float) -> str:
    """A time as the rewards parse it: ``12`` for a whole number, else one decimal (``12.5``)."""
    return str(int(round(v))) if abs(v - round(v)) < 1e-6 else f"{v:.1f}"


def box_json(box: list[float]) -> list[int]:
    """A box rounded to whole pixels, as an answer writes it."""
    return [int(round(v)) for v in box]
