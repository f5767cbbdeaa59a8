"""What the user gives the Try tab -> a record in the DESIGN schema -> a ``Sample``, as in training.

The uploaded file is checked (an image or a video this demo can read, not over the pixel limit), the
task template's prompt is one of the project's own prompt texts (``data_pipelines.converters`` and the
synthetic tasks), the ground truth the user typed is read with the rewards' own answer parsers (so it
can be written the way an answer is), and the record is loaded by ``data_pipelines.RecordDataset``:
the image is smart-resized and the ground truth mapped into the model's frame exactly as in training.
Every problem is an :class:`InputError` with one line the page shows.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_pipelines.converters.chart import chart_prompt
from data_pipelines.converters.classification import IMAGE_SUFFIXES, classification_prompt
from data_pipelines.converters.coco import detection_prompt
from data_pipelines.converters.refcoco import grounding_prompt
from data_pipelines.converters.temporal import VIDEO_SUFFIXES, temporal_prompt
from data_pipelines.dataset import RecordDataset
from data_pipelines.prompts import PROMPT_STYLES, answer_instruction, user_prompt
from data_pipelines.records import RecordError
from data_pipelines.sample import Sample
from data_pipelines.synthetic.shapes import plural
from data_pipelines.vision import VisionSpec
from rewards.boxes import parse_boxes
from rewards.counting import parse_count
from rewards.temporal import parse_segment

# The Try tab's task templates, in the order the page lists them: task -> (label, what "target" means).
TEMPLATES: dict[str, tuple[str, str]] = {
    "detection": ("detect", "the category to detect, e.g. circle"),
    "grounding": ("ground", "the phrase that names one object, e.g. the red square"),
    "classification": ("classify", "the choices, comma-separated (empty: open answer)"),
    "counting": ("count", "what to count, e.g. triangle"),
    "temporal_grounding": ("temporal grounding", "the moment to find, e.g. the red circle is visible"),
    "chart_to_code": ("chart-to-code", "(not used)"),
}
DEFAULT_TARGETS = {
    "detection": "circle",
    "grounding": "the red square",
    "classification": "circle, square, triangle",
    "counting": "circle",
    "temporal_grounding": "the red circle is visible",
    "chart_to_code": "",
}
# A record needs a solution; with no ground truth it carries one that nothing scores (``Truth.given``).
_PLACEHOLDER = {
    "detection": {"boxes": [], "labels": []},
    "grounding": {"box": [0, 0, 1, 1]},
    "classification": {"label": "?"},
    "counting": {"count": 0},
    "temporal_grounding": {"segment": [0.0, 0.001]},
    "chart_to_code": {},
}


class InputError(ValueError):
    """A bad input, said in one line for the page (the app keeps serving)."""


@dataclass
class Media:
    """An uploaded file that passed the checks. kind: ``image`` or ``video``; size: (width, height)."""

    path: Path
    kind: str
    size: tuple[int, int]


def template_prompt(
    task: str, target: str, prompt_style: str = "answer_only", coord_space: str = "pixel"
) -> str:
    """The project's prompt for ``task`` about ``target`` (the texts the converters and synthetic tasks write)."""
    if task not in TEMPLATES:
        raise InputError(f"task must be one of {', '.join(TEMPLATES)}, got {task!r}")
    if prompt_style not in PROMPT_STYLES:
        raise InputError(f"prompt style must be one of {', '.join(PROMPT_STYLES)}, got {prompt_style!r}")
    target = (target or "").strip() or DEFAULT_TARGETS[task]
    if task == "detection":
        return detection_prompt(target, coord_space, prompt_style)
    if task == "grounding":
        return grounding_prompt(target, coord_space, prompt_style)
    if task == "classification":
        choices = [c.strip() for c in target.split(",") if c.strip()]
        return classification_prompt(choices or None, prompt_style)
    if task == "counting":  # the synthetic counting question
        return f"How many {plural(target)} are in the image? {answer_instruction('number', prompt_style)}"
    if task == "temporal_grounding":
        return temporal_prompt(target, prompt_style)
    return chart_prompt(prompt_style)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the header when PIL reads ``path`` as an image, else None (nothing decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # the size is checked against the demo's own limit next
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except Image.DecompressionBombError as e:
        raise InputError(f"{path.name}: the image is too large to open safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _video_size(path: Path) -> tuple[int, int] | None:
    """(width, height) of the first video stream, or None when PyAV finds none."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                return None
            s = container.streams.video[0]
            return int(s.width or 0), int(s.height or 0)
    except Exception:  # FFmpeg errors share no base class; "not a video" is the answer
        return None


def check_media(path: str | Path | None, max_megapixels: float) -> Media:
    """The upload, checked: readable as an image (header only) or a video, within ``max_megapixels``."""
    if path is None or not str(path).strip():
        raise InputError("no input: upload an image or a video, or pick one of the examples")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"file not found: {p}")
    size = _image_size(p)
    kind = "image"
    if size is None:
        size = (
            _video_size(p)
            if p.suffix.lower() in VIDEO_SUFFIXES or p.suffix.lower() not in IMAGE_SUFFIXES
            else None
        )
        kind = "video"
        if size is None and p.suffix.lower() in VIDEO_SUFFIXES:
            raise InputError(f"{p.name}: the video does not decode (no readable video stream)")
    if size is None:
        raise InputError(
            f"{p.name} is not an image or a video this demo can read "
            f"(images: {', '.join(s[1:] for s in IMAGE_SUFFIXES)}; videos: {', '.join(s[1:] for s in VIDEO_SUFFIXES)})"
        )
    mp = size[0] * size[1] / 1e6
    if mp > max_megapixels:
        raise InputError(
            f"{p.name}: the {kind} is {size[0]}x{size[1]} ({mp:.1f} MP), over the demo's limit of "
            f"{max_megapixels:g} MP; downscale it or start the demo with a larger --max-megapixels"
        )
    return Media(p, kind, size)


@dataclass
class Truth:
    """The solution a record carries. given: whether the user gave it (else nothing is scored)."""

    solution: dict[str, Any]
    given: bool


def _boxes(text: str, what: str) -> list:
    parsed = parse_boxes(text, None)
    if not parsed.ok or not all(b.valid for b in parsed.boxes):
        raise InputError(f"ground truth: {what} (xyxy in the original image's pixels), got {text[:80]!r}")
    return parsed.boxes


def parse_truth(task: str, text: str | None, target: str = "") -> Truth:
    """The user's ground truth (ORIGINAL pixels / seconds) as a solution for ``task``.

    A JSON object is taken as the solution itself (DESIGN schema). Otherwise it is read the way the
    task's reward reads an answer: boxes as ``[x1, y1, x2, y2]`` / ``{"bbox_2d": ..., "label": ...}``
    lists (detection labels default to ``target``), a count, ``start to end`` seconds, a label, or code.
    """
    text = (text or "").strip()
    if not text:
        return Truth(dict(_PLACEHOLDER[task]), False)
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict):
        return Truth(value, True)
    if task == "detection":
        default = (target or "").strip() or DEFAULT_TARGETS["detection"]
        boxes = [] if value == [] else _boxes(text, "expected a list of boxes")
        return Truth(
            {"boxes": [list(b[:4]) for b in boxes], "labels": [b.label or default for b in boxes]}, True
        )
    if task == "grounding":
        boxes = _boxes(text, "expected one box")
        if len(boxes) != 1:
            raise InputError(f"ground truth: expected one box for grounding, got {len(boxes)}")
        return Truth({"box": list(boxes[0][:4])}, True)
    if task == "counting":
        parsed = parse_count(text)
        if parsed.value is None:
            raise InputError(f"ground truth: expected a whole number for counting, got {text[:80]!r}")
        return Truth({"count": int(parsed.value)}, True)
    if task == "temporal_grounding":
        seg, _ = parse_segment(text)
        if seg is None:
            raise InputError(f"ground truth: expected 'start to end' in seconds, got {text[:80]!r}")
        return Truth({"segment": [float(seg[0]), float(seg[1])]}, True)
    if task == "classification":
        label = value if isinstance(value, str) else text
        return Truth({"label": label}, True)
    return Truth({"code": text}, True)  # chart_to_code: the reference code


def build_record(
    media: Media, task: str, prompt: str, truth: Truth, coord_space: str = "pixel"
) -> dict[str, Any]:
    """The DESIGN-schema record of one Try request (paths absolute)."""
    if not (prompt or "").strip():
        raise InputError("the prompt is empty: pick a task template or write a prompt")
    solution = dict(truth.solution)
    if task == "chart_to_code":
        if media.kind != "image":
            raise InputError("chart-to-code needs an image of a chart, not a video")
        solution["image"] = str(media.path)  # the input chart is the render's reference
    record: dict[str, Any] = {
        "id": f"demo-{media.path.stem}",
        "task": task,
        "prompt": user_prompt(
            prompt.strip(), n_images=int(media.kind == "image"), video=media.kind == "video"
        ),
        "solution": solution,
    }
    if media.kind == "image":
        record["images"] = [str(media.path)]
    else:
        record["video"] = {"path": str(media.path)}
    if coord_space != "pixel":
        record["coord_space"] = coord_space
    return record


def load_sample(record: dict[str, Any], vision: VisionSpec) -> Sample:
    """Check and load ``record`` with the training data pipeline (resize, frames, ground-truth mapping)."""
    try:
        sample = RecordDataset([record], vision=vision, source="input")[0]
    except RecordError as e:
        parts = str(e).split(": ", 2)  # "input:1: record 'demo-x': problem" -> "problem"
        raise InputError(parts[-1] if len(parts) == 3 and parts[0] == "input:1" else str(e)) from None
    if sample.task == "temporal_grounding" and sample.video is not None and "duration" not in sample.solution:
        # as the temporal converters do: the duration comes from the video when the truth has none
        sample.solution["duration"] = sample.solution_original["duration"] = float(sample.video.duration)
    return sample
