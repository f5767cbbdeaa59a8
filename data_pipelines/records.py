"""The JSONL record schema (DESIGN "Records"): checking and normalising one record, no file access.

``check_record`` raises ``RecordError`` with a reason code (what ``skip`` mode counts) and a message
(what ``strict`` mode prints, prefixed by file, line and record id). Checks that need the image or
video itself (box inside the image, readable file) happen when the record is loaded. What each task
needs of its ``solution`` is in its spec (``data_pipelines/tasks/``); the checks here are the ones
every record gets.
"""

from __future__ import annotations

from typing import Any

from data_pipelines.errors import RecordError, box_error, check_segment, fail, is_number
from data_pipelines.geometry import COORD_SPACES, check_box, is_finite_number
from data_pipelines.tasks import TASKS, get_task

# RecordError and the task registry are re-exported: callers import them from here.
__all__ = [
    "TASKS",
    "RecordError",
    "check_record",
    "check_reward_keys",
    "check_solution",
    "count_placeholders",
    "normalise_prompt",
]


def normalise_prompt(prompt: Any, n_images: int, has_video: bool) -> list[dict[str, Any]]:
    """A chat message list. A plain string becomes one user message whose content is one placeholder
    per image (and one for the video) followed by the text."""
    if isinstance(prompt, str):
        if not prompt.strip():
            fail("empty_prompt", "field 'prompt' is an empty string")
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
        if has_video:
            content.append({"type": "video"})
        content.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": content}]
    if not isinstance(prompt, list) or not prompt:
        fail(
            "bad_type",
            f"field 'prompt' must be a non-empty list of chat messages, got {type(prompt).__name__}",
        )
    for k, msg in enumerate(prompt):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str) or "content" not in msg:
            fail("bad_type", f"prompt[{k}] must be a dict with 'role' (str) and 'content'")
        content = msg["content"]
        if isinstance(content, list):
            for j, part in enumerate(content):
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    fail("bad_type", f"prompt[{k}].content[{j}] must be a dict with a 'type'")
        elif not isinstance(content, str):
            fail("bad_type", f"prompt[{k}].content must be a string or a list of parts")
    return prompt


def count_placeholders(prompt: list[dict[str, Any]], kind: str) -> int:
    """Number of ``{"type": kind}`` parts in the messages (``kind`` is ``image`` or ``video``)."""
    n = 0
    for msg in prompt:
        if isinstance(msg.get("content"), list):
            n += sum(1 for part in msg["content"] if part.get("type") == kind)
    return n


def check_solution(task: str, solution: Any) -> None:
    """Raise ``RecordError`` unless ``solution`` has the keys and types ``task`` needs (its spec's
    ``solution_keys`` and ``check``), then the checks every reward key gets whatever the task."""
    if not isinstance(solution, dict):
        fail("bad_type", f"field 'solution' must be an object, got {type(solution).__name__}")
    spec = get_task(task)
    groups = spec.solution_keys
    if not any(all(solution.get(k) is not None for k in g) for g in groups):
        need = " or ".join("+".join(g) for g in groups)
        fail("missing_field", f"task {task!r} needs solution key(s) {need}")
    spec.check(solution)
    check_reward_keys(solution)


def check_reward_keys(solution: dict[str, Any]) -> None:
    """The ground-truth keys rewards read, checked whatever the task (a classification record with a
    stray ``box`` still meets the ``iou`` reward), then every number in the solution: NaN and infinite
    ones are record errors (``non_finite``) wherever they are."""
    if solution.get("box") is not None:
        reason = check_box(solution["box"], None)
        if reason:
            box_error("solution.box", solution["box"], reason)
    boxes = solution.get("boxes")
    if boxes is not None:
        if not isinstance(boxes, list):
            fail("bad_type", f"solution.boxes must be a list of xyxy boxes, got {type(boxes).__name__}")
        for k, box in enumerate(boxes):
            reason = None if box is None else check_box(box, None)
            if reason:
                box_error(f"solution.boxes[{k}]", box, reason)
    labels = solution.get("labels")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        fail("bad_type", "solution.labels must be a list of strings")
    count = solution.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        fail("bad_type", f"solution.count must be a non-negative integer, got {count!r}")
    if solution.get("segment") is not None:
        check_segment(solution["segment"])
    stack: list[tuple[str, Any]] = [("solution", solution)]
    while stack:  # iterative: a deeply nested extra key must not overflow the stack
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{k}]", v) for k, v in enumerate(value))
        elif is_number(value) and not is_finite_number(value):
            fail("non_finite", f"{path} is {repr(value)[:24]}: ground truth must be finite numbers")


def check_record(rec: Any) -> dict[str, Any]:
    """Validate one parsed JSON record; return it normalised (prompt as messages, defaults filled).

    Raises ``RecordError`` naming the field and what was expected.
    """
    if not isinstance(rec, dict):
        fail("bad_type", f"a record must be a JSON object, got {type(rec).__name__}")
    rid = rec.get("id")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        fail("missing_field", "field 'id' must be a non-empty string")
    task = rec.get("task")
    if not isinstance(task, str):
        fail("missing_field", "field 'task' must be a string")
    if task not in TASKS:
        fail("unknown_task", f"unknown task {task!r}; known: {', '.join(TASKS)}")
    images = rec.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
        fail("bad_type", "field 'images' must be a list of paths")
    video = rec.get("video")
    if isinstance(video, str):
        video = {"path": video}
    if video is not None:
        if not isinstance(video, dict) or not isinstance(video.get("path"), str) or not video["path"]:
            fail("bad_type", "field 'video' must be {'path': str, 'fps'?: float, 'max_frames'?: int}")
        for key in ("fps", "max_frames", "min_frames"):
            value = video.get(key)
            if value is not None and not (is_finite_number(value) and value > 0):
                fail("bad_type", f"video.{key} must be a positive finite number, got {value!r}")
    if get_task(task).needs_video and video is None:
        fail("missing_field", f"task {task!r} needs a 'video'")
    coord_space = rec.get("coord_space", "pixel")
    if coord_space not in COORD_SPACES:
        fail("bad_value", f"coord_space must be one of {COORD_SPACES}, got {coord_space!r}")
    prompt = normalise_prompt(rec.get("prompt"), len(images), video is not None)
    n_img = count_placeholders(prompt, "image")
    if n_img != len(images):
        fail(
            "placeholder_mismatch",
            f"prompt has {n_img} image placeholder(s) but the record has {len(images)} image(s)",
        )
    n_vid = count_placeholders(prompt, "video")
    if n_vid != (1 if video is not None else 0):
        fail(
            "placeholder_mismatch",
            f"prompt has {n_vid} video placeholder(s) but the record has {int(video is not None)} video(s)",
        )
    check_solution(task, rec.get("solution"))
    out = dict(rec)
    out.update(id=str(rid), images=images, video=video, coord_space=coord_space, prompt=prompt)
    return out
