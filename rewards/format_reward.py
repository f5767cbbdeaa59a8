"""``format``: 1.0 when a completion has the required structure, else 0.0.

Structures (parameter ``structure``):

- ``think_answer`` (default): ``<think>...</think>`` then ``<answer>...</answer>`` and nothing else
  (whitespace between and around allowed), exactly one block of each, DOTALL; the answer must be
  non-empty, and so must the reasoning unless ``allow_empty_think``.
- ``answer_only``: ``<answer>...</answer>`` and nothing else, non-empty (CLS-RL's no-thinking recipe).
- ``json``: the answer (tag rule of :mod:`rewards.parsing`) is JSON of the expected shape; see
  :func:`json_shape_ok`. ``json_shape="auto"`` picks the shape from the record's solution keys.
- ``none``: always 1.0 (no format constraint).

The chat template's tokens (``<|im_end|>``, ...) are stripped first. Never raises.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args

from rewards.columns import completion_text, solutions
from rewards.params import check_arguments
from rewards.parsing import extract_answer, loads_json, strip_template_tokens
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores

Structure = Literal["think_answer", "answer_only", "json", "none"]
JsonShape = Literal["auto", "any", "box", "boxes", "number", "segment", "string"]
STRUCTURES = get_args(Structure)
JSON_SHAPES = get_args(JsonShape)

_THINK_ANSWER = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_ANSWER_ONLY = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAG = re.compile(r"</?(?:think|answer)>", re.IGNORECASE)


def _single_blocks(text: str, names: tuple[str, ...]) -> bool:
    tags = [t.lower() for t in _TAG.findall(text)]
    return sorted(tags) == sorted([f"<{n}>" for n in names] + [f"</{n}>" for n in names])


def think_answer_ok(text: str, allow_empty_think: bool = False) -> bool:
    """Whether ``text`` (template tokens already stripped) is exactly one think block then one answer."""
    if not _single_blocks(text, ("think", "answer")):  # first: one tag of each keeps the regex linear
        return False
    m = _THINK_ANSWER.fullmatch(text)
    if not m:
        return False
    return bool(m.group(2).strip()) and (allow_empty_think or bool(m.group(1).strip()))


def answer_only_ok(text: str) -> bool:
    """Whether ``text`` (template tokens already stripped) is exactly one non-empty answer block."""
    if not _single_blocks(text, ("answer",)):
        return False
    m = _ANSWER_ONLY.fullmatch(text)
    return bool(m) and bool(m.group(1).strip())


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _is_box(v: Any) -> bool:
    if isinstance(v, dict):
        v = v.get("bbox_2d", v.get("bbox", v.get("box")))
    return isinstance(v, list) and len(v) == 4 and all(_is_num(c) for c in v)


def json_shape_ok(value: Any, shape: str) -> bool:
    """Whether a parsed JSON value has ``shape``.

    ``box``: ``{"bbox_2d": [4 numbers], ...}``, or ``[4 numbers]``, or a one-element list of either.
    ``boxes``: a list (possibly empty) of boxes. ``number``: a number. ``segment``: ``[start, end]``
    or ``{"start": s, "end": e}``. ``string``: a string. ``any``: any JSON.
    """
    if shape == "any":
        return True
    if shape == "box":
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        return _is_box(value)
    if shape == "boxes":
        return isinstance(value, list) and all(_is_box(v) for v in value)
    if shape == "number":
        return _is_num(value)
    if shape == "segment":
        if isinstance(value, dict):
            value = [value.get("start"), value.get("end")]
        return isinstance(value, list) and len(value) == 2 and all(_is_num(v) for v in value)
    if shape == "string":
        return isinstance(value, str) and bool(value.strip())
    raise ValueError(f"format: json_shape must be one of {JSON_SHAPES}, got {shape!r}")


def auto_shape(solution: dict[str, Any]) -> str:
    """The JSON shape a record's answer should have, from its solution keys (``any`` if unknown)."""
    if solution.get("box") is not None:
        return "box"
    if solution.get("boxes") is not None:
        return "boxes"
    if solution.get("count") is not None:
        return "number"
    if solution.get("segment") is not None:
        return "segment"
    return "any"


@register_reward("format")
def format_reward(
    completions: list,
    structure: Structure = "think_answer",
    json_shape: JsonShape = "auto",
    allow_empty_think: bool = False,
    **columns: Any,
) -> Scores:
    """Format: 1.0 if the completion has the required tag/JSON structure, else 0.0 (see module doc)."""
    check_arguments(format_reward, locals())
    n = len(completions)
    counter = MetricCounter("malformed")
    sols = solutions(columns, n) if structure == "json" else [{}] * n
    out: list[float | None] = []
    for i, completion in enumerate(completions):
        text = strip_template_tokens(completion_text(completion))
        if structure == "none":
            ok = True
        elif structure == "think_answer":
            ok = think_answer_ok(text, allow_empty_think)
        elif structure == "answer_only":
            ok = answer_only_ok(text)
        else:
            answer = extract_answer(text)
            parsed, value = loads_json(answer.text) if answer.ok else (False, None)
            shape = auto_shape(sols[i]) if json_shape == "auto" else json_shape
            ok = parsed and json_shape_ok(value, shape)
        counter.add("malformed", not ok)
        out.append(1.0 if ok else 0.0)
    return counter.scores(out, columns, "format")


format_reward.__name__ = "format"  # TRL names its logs after __name__: rewards/format/mean
format_reward.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
