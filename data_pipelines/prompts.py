"""Prompt sentences shared by the synthetic tasks and the converters: the exact answer form and the
coordinate frame, said the same way everywhere."""

from __future__ import annotations

from typing import Any

PROMPT_STYLES = ("answer_only", "think_answer", "plain")
BOX_FORM = '{"bbox_2d": [x1, y1, x2, y2]}'


def answer_instruction(form: str, prompt_style: str) -> str:
    """The sentence that tells the model the exact answer form (``form`` is shown inside the tags).

    >>> answer_instruction("shape", "answer_only")
    'Answer with <answer>shape</answer>.'
    """
    if prompt_style == "answer_only":
        return f"Answer with <answer>{form}</answer>."
    if prompt_style == "think_answer":
        return f"Think in <think></think>, then answer in <answer></answer> as <answer>{form}</answer>."
    if prompt_style == "plain":  # no tags: the whole completion is the answer (CLS-RL's no-thinking form)
        return f"Answer with the {form} only."
    raise ValueError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")


def none_sentence(prompt_style: str) -> str:
    """How to say "no objects" for a detection prompt, in the answer form of ``prompt_style``."""
    empty = "[]" if prompt_style == "plain" else "<answer>[]</answer>"
    return f"If there is none, answer {empty}."


def coord_sentence(coord_space: str) -> str:
    """Which frame box coordinates are in (``pixel``, ``norm1000`` or ``norm1``)."""
    if coord_space == "pixel":
        return "Coordinates are pixels of the image."
    if coord_space == "norm1000":
        return "Coordinates are normalised to 0-1000 of the image width and height."
    if coord_space == "norm1":
        return "Coordinates are normalised to 0-1 of the image width and height."
    raise ValueError(f"coord_space must be 'pixel', 'norm1000' or 'norm1', got {coord_space!r}")


def user_prompt(text: str, n_images: int = 1, video: bool = False) -> list[dict[str, Any]]:
    """One user message: image placeholders (or a video placeholder), then the text."""
    content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
    if video:
        content.append({"type": "video"})
    content.append({"type": "text", "text": text})
    return [{"role": "user", "content": content}]
