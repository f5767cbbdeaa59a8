"""One completion of one Sample -> the parsed answer, in the ORIGINAL image's frame.

:func:`parse_prediction` is the public entry point that ``mmrft eval``, ``mmrft data filter`` and the
demo share. It parses with exactly the rewards' own code (never a second parser): the answer rule
(:func:`rewards.parsing.extract_answer`), :func:`rewards.boxes.parse_boxes` and the detection reward's
canonical order, :func:`rewards.counting.parse_count`, :func:`rewards.temporal.parse_segment`,
:func:`rewards.tracking.parse_track`, :func:`rewards.chart.reward.extract_code` and the accuracy
reward's label normalisation. Boxes are parsed in the frame the model saw (clipped to it, as in
training) and mapped back to the record's original pixels with :meth:`Sample.to_original`.

    from mmrft.evaluation import parse_prediction
    pred = parse_prediction(sample, '<answer>[{"bbox_2d": [10, 20, 50, 60], "label": "dog"}]</answer>')
    pred.ok, pred.boxes[0].box, pred.boxes[0].label     # True, [x1, y1, x2, y2] in original pixels, "dog"
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from typing import Any

from data_pipelines.sample import Sample
from mmrft.evaluation.metrics import eval_family
from mmrft.scoring import columns_for
from rewards.accuracy import ANSWER_FORMATS, canonical, choice_position
from rewards.boxes import Box, parse_boxes
from rewards.chart.reward import CODE_BLOCK_MODES, extract_code
from rewards.columns import completion_text, frame_size
from rewards.counting import parse_count
from rewards.detection import canonical_order
from rewards.parsing import extract_answer, synonym_table
from rewards.temporal import parse_segment
from rewards.tracking import parse_track

# The iou reward reads at most this many boxes from a grounding answer (rewards/iou.py).
GROUNDING_MAX_BOXES = 16


@dataclass
class ParseOptions:
    """Reward parameters that change how an answer is read (taken from the config's rewards)."""

    label_synonyms: dict | None = None  # accuracy's `synonyms`: {canonical: [variants]}
    index_base: int = 1  # accuracy's `index_base` for answer_format "index"
    box_synonyms: dict | None = None  # detection's `synonyms`
    max_boxes: int = 100  # detection's `max_boxes`
    max_frames: int = 512  # tracking's `max_frames`
    code_block: str = "auto"  # chart_render's `code_block`

    @classmethod
    def from_rewards(cls, specs: list) -> ParseOptions:
        """The options the config's reward specs imply (a reward named by registry name only)."""
        kw: dict[str, Any] = {}
        for spec in specs:
            p = dict(spec.params or {})
            name = spec.name.rsplit(":", 1)[-1]
            if name == "accuracy":
                kw.update(label_synonyms=p.get("synonyms"), index_base=int(p.get("index_base", 1)))
            elif name == "detection":
                kw.update(box_synonyms=p.get("synonyms"), max_boxes=int(p.get("max_boxes", 100)))
            elif name == "tracking":
                kw["max_frames"] = int(p.get("max_frames", 512))
            elif name == "chart_render":
                kw["code_block"] = p.get("code_block", "auto")
        if kw.get("code_block", "auto") not in CODE_BLOCK_MODES:
            raise ValueError(f"chart_render code_block must be one of {CODE_BLOCK_MODES}")
        return cls(**kw)

    @functools.cached_property
    def label_table(self) -> dict[str, str]:
        return synonym_table(self.label_synonyms)

    @functools.cached_property
    def box_table(self) -> dict[str, str]:
        return synonym_table(self.box_synonyms)


@dataclass
class PredBox:
    """One predicted box: xyxy in ORIGINAL pixels (None for a malformed box, which matches nothing),
    its label normalised as the detection reward does (synonyms applied; None when unlabelled), and its
    confidence in [0, 1] (None when the model gave none; scorers then use 1.0)."""

    box: list[float] | None
    label: str | None = None
    score: float | None = None


@dataclass
class Prediction:
    """One completion of one record, parsed for the record's task.

    task: the record's task. answer: the answer text by the answer rule (None when there is none).
    failure: "" when the answer was read for this task, else why not (``parse_fail``, ``no_box``,
        ``multiple_boxes``, ``invalid_box``, ``ambiguous``, ``too_many_boxes``, ``no_code``,
        ``multiple_answers``, ``unclosed_answer``, ``empty``).
    boxes: detection: every predicted box in the reward's canonical order; grounding: the boxes read
        (exactly one when ``ok``). label: classification: the normalised label (for letter / index
        answers, the choice picked; None when none). count: counting. segment: temporal grounding,
        (start, end) seconds, clipped to the video's duration as the reward does. track: tracking, one
        entry per sampled frame (None = the model says the object is absent; a PredBox whose ``box``
        is None = malformed). code: chart-to-code, the code that would be run.
    """

    task: str
    answer: str | None
    failure: str = ""
    boxes: list[PredBox] = field(default_factory=list)
    label: str | None = None
    count: int | None = None
    segment: tuple[float, float] | None = None
    track: list[PredBox | None] | None = None
    code: str | None = None

    @property
    def ok(self) -> bool:
        return self.failure == ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict holding only the fields that apply to the task."""
        out: dict[str, Any] = {"answer": self.answer, "failure": self.failure}
        family = eval_family(self.task)
        if family in ("detection", "grounding"):
            out["boxes"] = [asdict(b) for b in self.boxes]
        elif family == "classification":
            out["label"] = self.label
        elif family == "counting":
            out["count"] = self.count
        elif family == "temporal_grounding":
            out["segment"] = list(self.segment) if self.segment is not None else None
        elif family == "tracking":
            out["track"] = (
                None if self.track is None else [None if b is None else asdict(b) for b in self.track]
            )
        elif family == "chart_to_code":
            out["code"] = self.code
        return out


def _to_original(sample: Sample, boxes: list[Box]) -> list[list[float] | None]:
    """Model-frame boxes -> original pixels (malformed boxes -> None)."""
    coords = [[b.x1, b.y1, b.x2, b.y2] if b.valid else None for b in boxes]
    if not coords:
        return []
    return sample.to_original({"boxes": coords})["boxes"]


def _frame(sample: Sample) -> tuple[float, float] | None:
    """The frame boxes are clipped to, exactly as the rewards get it from the trainer's columns."""
    return frame_size(sample.coord_space, columns_for([sample])["image_size"][0])


def parse_prediction(sample: Sample, completion: Any, options: ParseOptions | None = None) -> Prediction:
    """Parse one completion (a string or TRL's message list) of ``sample`` into a :class:`Prediction`.

    Uses the rewards' own parsers (see the module doc), so an answer reads the same in training and
    in evaluation; boxes come back in the ORIGINAL image's pixels, times in seconds. Never raises on
    model output.
    """
    opts = options or ParseOptions()
    task, family = sample.task, eval_family(sample.task)
    answer = extract_answer(completion_text(completion))
    if family == "chart_to_code":  # extract_code applies the answer rule itself
        code = extract_code(completion, opts.code_block)
        return Prediction(task, answer.text, "" if code is not None else "no_code", code=code)
    if not answer.ok:
        return Prediction(task, None, answer.failure or "parse_fail")
    text = answer.text
    if family == "classification":
        return _classification(sample, text, opts)
    if family == "counting":
        parsed = parse_count(text)
        return Prediction(task, text, parsed.failure if parsed.value is None else "", count=parsed.value)
    if family == "grounding":
        return _grounding(sample, text)
    if family == "detection":
        return _detection(sample, text, opts)
    if family == "temporal_grounding":
        seg, failure = parse_segment(text)
        duration = sample.solution.get("duration")
        if seg is not None and type(duration) in (int, float) and duration > 0:  # as temporal_iou
            seg = (min(max(seg[0], 0.0), duration), min(max(seg[1], 0.0), duration))
        return Prediction(task, text, failure, segment=seg)
    if family == "tracking":
        track = parse_track(text, _frame(sample), opts.max_frames)
        if track is None:
            return Prediction(task, text, "parse_fail")
        mapped = _to_original(sample, [b for b in track if b is not None])
        it = iter(mapped)
        return Prediction(task, text, "", track=[None if b is None else PredBox(next(it)) for b in track])
    return Prediction(task, text, f"unknown task {task!r}")


def _classification(sample: Sample, text: str, opts: ParseOptions) -> Prediction:
    sol = sample.solution
    fmt = sol.get("answer_format") or "label"
    choices = [c for c in (sol.get("choices") or []) if c is not None]
    table = opts.label_table
    if fmt in ANSWER_FORMATS and fmt != "label" and choices:
        pos = choice_position(text, choices, fmt, opts.index_base, table)
        label = canonical(choices[pos], table) if pos is not None else None
        return Prediction(sample.task, text, "" if label is not None else "parse_fail", label=label)
    return Prediction(sample.task, text, "", label=canonical(text, table) or None)


def _grounding(sample: Sample, text: str) -> Prediction:
    """The iou reward's rule: exactly one box (repeats count once), valid."""
    parsed = parse_boxes(text, _frame(sample), max_boxes=GROUNDING_MAX_BOXES)
    if not parsed.ok:
        return Prediction(sample.task, text, "parse_fail")
    unique = list({(b.x1, b.y1, b.x2, b.y2, b.valid): b for b in parsed.boxes}.values())
    boxes = [PredBox(c) for c in _to_original(sample, unique)]
    if not unique:
        failure = "no_box"
    elif len(unique) > 1:
        failure = "multiple_boxes"
    elif not unique[0].valid:
        failure = "invalid_box"
    else:
        failure = ""
    return Prediction(sample.task, text, failure, boxes=boxes)


def _detection(sample: Sample, text: str, opts: ParseOptions) -> Prediction:
    parsed = parse_boxes(text, _frame(sample), max_boxes=opts.max_boxes)
    if not parsed.ok:
        failure = "too_many_boxes" if parsed.failure == "too_many_boxes" else "parse_fail"
        return Prediction(sample.task, text, failure)
    ordered = canonical_order(parsed.boxes)
    table = opts.box_table
    boxes = [
        PredBox(c, None if b.label is None else table.get(b.label, b.label), b.score)
        for b, c in zip(ordered, _to_original(sample, ordered))
    ]
    return Prediction(sample.task, text, "", boxes=boxes)
