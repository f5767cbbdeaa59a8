"""The Try tab's requests: one input -> each model's completions, parsed answers, pictures and rewards.

:class:`Demo` holds the loaded models and the settings; :meth:`Demo.run` answers with the models and
:meth:`Demo.score` reads a completion the user pasted, both returning a :class:`TryResult`. Neither
raises: a bad input becomes the result's ``error`` (one line for the page) and a generation that fails
in one model becomes that model's ``error``, so one request never takes the app down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from data_pipelines.sample import Sample
from mmrft.demo import drawing, engine
from mmrft.demo.inputs import (
    InputError,
    Media,
    Truth,
    build_record,
    check_media,
    load_sample,
    parse_truth,
    template_prompt,
)
from mmrft.evaluation import ParseOptions, Prediction, parse_prediction
from mmrft.evaluation.metrics import eval_family

log = logging.getLogger("mmrft.demo")
BOX_TASKS = ("detection", "grounding")  # evaluation families whose answers are boxes


@dataclass
class Answer:
    """One model's answers to one input: per completion its parsed answer, rewards (empty when nothing is
    scored) and total; tokens / seconds when generated here; renders: chart-to-code, "" (rendered) or why
    not, per completion; picture: the answers drawn in the ORIGINAL frame; error: why there is none."""

    model: str
    completions: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    rewards: list[dict[str, float | None]] = field(default_factory=list)
    total: list[float | None] = field(default_factory=list)
    tokens: list[int] | None = None
    seconds: float | None = None
    renders: list[str] = field(default_factory=list)
    picture: Image.Image | None = None
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model, "error": self.error}
        if self.error:
            return out
        out["completions"] = self.completions
        out["parsed"] = [p.to_json() for p in self.predictions]
        out["rewards"] = self.rewards
        out["reward"] = self.total
        if self.tokens is not None:
            out["tokens"], out["seconds"] = self.tokens, round(self.seconds or 0.0, 3)
        if self.renders:
            out["render_failures"] = self.renders
        return out


@dataclass
class TryResult:
    """A Try request's outcome: ``error`` (one line, "" when fine), the input as the model saw it, the
    prompt, and one :class:`Answer` per model (tuned first, then base)."""

    error: str = ""
    prompt: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"ok": not self.error, "error": self.error, "prompt": self.prompt, "input": self.info,
                "answers": {a.model: a.to_json() for a in self.answers}}  # fmt: skip


def _input_info(media: Media, sample: Sample, truth: Truth) -> dict[str, Any]:
    info: dict[str, Any] = {
        "kind": media.kind,
        "original_size": list(media.size),
        "coord_space": sample.coord_space,
    }
    if sample.images:
        info["model_size"] = list(sample.images[0].size)
    if sample.video is not None:
        clip = sample.video
        info["model_size"] = [int(clip.frames.shape[2]), int(clip.frames.shape[1])]
        info["frames"] = len(clip.timestamps)
        info["duration_s"] = round(float(clip.duration), 3)
    info["truth"] = sample.solution_original if truth.given else None  # original frame
    return info


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v - round(v)) < 0.05 else f"{v:.1f}"


def _box_text(k: int | None, label: str | None, score: float | None) -> str:
    parts = [f"#{k + 1}" if k is not None else "truth"]
    if label:
        parts.append(label)
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def short_answer(pred: Prediction) -> str:
    """One line saying what was read from a completion."""
    if not pred.ok:
        return f"not read ({pred.failure})"
    family = eval_family(pred.task)
    if family in BOX_TASKS:
        boxes = [b for b in pred.boxes if b.box is not None]
        shown = "; ".join("[" + ", ".join(_fmt(v) for v in b.box) + "]" + (f" {b.label}" if b.label else "")
                          for b in boxes[:4])  # fmt: skip
        return f"{len(boxes)} box(es) {shown}" + (" ..." if len(boxes) > 4 else "")
    if family == "classification":
        return f"label {pred.label!r}"
    if family == "counting":
        return f"count {pred.count}"
    if family == "temporal_grounding" and pred.segment is not None:
        return f"{_fmt(pred.segment[0])} to {_fmt(pred.segment[1])} s"
    if family == "chart_to_code":
        return f"{len((pred.code or '').splitlines())} lines of code"
    return str(pred.answer)


def _original_picture(media: Media) -> Image.Image:
    if media.kind == "image":
        with Image.open(media.path) as im:
            return im.convert("RGB")
    from data_pipelines.synthetic.video import first_frame

    return first_frame(media.path).convert("RGB")


def picture(
    media: Media,
    sample: Sample,
    answer: Answer,
    charts: list[Image.Image | None],
    has_truth: bool,
    numbers: list[int] | None = None,
) -> Image.Image:
    """The answers drawn in the ORIGINAL frame: boxes (with labels and confidences), a timeline of the
    sampled frames for temporal answers, the renders beside the input chart, or captions; the ground
    truth too when ``has_truth``. numbers: each completion's 0-based number (its colour and ``#`` label;
    default 0, 1, ...)."""
    family, truth = eval_family(sample.task), sample.solution_original
    preds = answer.predictions
    nums = list(numbers) if numbers is not None else list(range(len(preds)))
    if family == "temporal_grounding" and sample.video is not None:
        segs = [(truth["segment"][0], truth["segment"][1], "truth", -1)] if has_truth else []
        segs += [(p.segment[0], p.segment[1], f"#{k + 1} {_fmt(p.segment[0])}-{_fmt(p.segment[1])} s", k)
                 for k, p in zip(nums, preds) if p.segment is not None]  # fmt: skip
        clip = sample.video
        return drawing.timeline(clip.frames, clip.timestamps, clip.duration, segs)
    base = _original_picture(media)
    if family == "chart_to_code":
        panels = [("input chart", base)] + [(f"#{k + 1} render", im) for k, im in zip(nums, charts[:3])]
        return drawing.side_by_side(panels)
    if family in BOX_TASKS:
        boxes: list[drawing.DrawBox] = []
        if has_truth:
            gt = truth.get("boxes") or ([truth["box"]] if truth.get("box") else [])
            labels = truth.get("labels") or [None] * len(gt)
            boxes += [drawing.DrawBox(b, _box_text(None, lab, None), -1) for b, lab in zip(gt, labels) if b]
        for k, p in zip(nums, preds):
            boxes += [
                drawing.DrawBox(b.box, _box_text(k, b.label, b.score), k)
                for b in p.boxes
                if b.box is not None
            ]
        image = drawing.draw_boxes(base, boxes)
        lines = [
            (f"#{k + 1}: {short_answer(p)}", drawing.color_of(k)) for k, p in zip(nums, preds) if not p.ok
        ]
        return drawing.caption(image, lines[:9]) if lines else image
    lines = [(f"#{k + 1}: {short_answer(p)}", drawing.color_of(k)) for k, p in zip(nums, preds)]
    if has_truth:
        want = truth.get("label", truth.get("count", truth.get("segment")))
        lines.insert(0, (f"truth: {want}", drawing.TRUTH_COLOR))
    return drawing.caption(base, lines[:9])


class Demo:
    """The models (tuned, and optionally the base it started from) and the settings they share."""

    def __init__(self, models: list[engine.DemoModel], settings: engine.DemoSettings):
        if not models:
            raise ValueError("the demo needs at least one model")
        self.models = models
        self.settings = settings

    def template(self, task: str, target: str, prompt_style: str) -> str:
        """The project's prompt for a task template (the tuned model's coordinate frame)."""
        try:
            return template_prompt(task, target, prompt_style, self.models[0].coord_space)
        except InputError as e:
            return f"({e})"

    def _prepare(
        self, media_path, task, prompt, truth_text, target, coord_space
    ) -> tuple[Media, Sample, Truth]:
        media = check_media(media_path, self.settings.max_megapixels)
        truth = parse_truth(task, truth_text, target)
        record = build_record(media, task, prompt, truth, coord_space)
        return media, load_sample(record, self.settings.vision), truth

    def _answer(self, name: str, media: Media, sample: Sample, truth: Truth, texts: list[str],
                prompt_style: str) -> Answer:  # fmt: skip
        specs = engine.reward_specs(sample.task, prompt_style, self.settings.rewards)
        ans = Answer(name, list(texts))
        ans.predictions = [parse_prediction(sample, t, ParseOptions.from_rewards(specs)) for t in texts]
        chart = eval_family(sample.task) == "chart_to_code"
        if truth.given or chart:  # a chart's reference is the input itself
            scores = engine.score(texts, sample, specs)
            ans.rewards, ans.total = scores.per_reward, scores.total
        charts: list[Image.Image | None] = []
        if chart:
            params = next((s.params for s in specs if s.name == "chart_render"), {})
            for p in ans.predictions[:3]:
                im, why = engine.render_chart(p.code, params) if p.code else (None, "no_code")
                charts.append(im)
                ans.renders.append(why)
        ans.picture = picture(media, sample, ans, charts, truth.given)
        return ans

    def run(self, media_path, task: str, target: str, prompt: str, prompt_style: str, truth_text: str,
            greedy: bool, temperature: float, max_new_tokens: int, n_samples: int, seed: int) -> TryResult:  # fmt: skip
        """Every model answers the input; never raises (see the module doc)."""
        result = TryResult(prompt=(prompt or "").strip())
        try:
            dec = engine.decoding(greedy, temperature, max_new_tokens, n_samples, seed)
            samples: dict[str, tuple[Media, Sample, Truth]] = {}
            for model in self.models:
                if model.coord_space not in samples:
                    samples[model.coord_space] = self._prepare(media_path, task, prompt, truth_text, target,
                                                               model.coord_space)  # fmt: skip
            media, first, truth = samples[self.models[0].coord_space]
            result.info = _input_info(media, first, truth)
        except (InputError, ValueError) as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
            return result
        for model in self.models:
            media, sample, truth = samples[model.coord_space]
            result.answers.append(self._model_answer(model, media, sample, truth, dec, prompt_style))
        return result

    def _model_answer(self, model: engine.DemoModel, media: Media, sample: Sample, truth: Truth,
                      dec, prompt_style: str) -> Answer:  # fmt: skip
        """One model's :class:`Answer`, or one whose ``error`` says why there is none."""
        try:
            gen = engine.answer(model, sample, dec, self.settings.max_prompt_length)
        except ValueError as e:  # a prompt over max_prompt_length names the limit to raise
            return Answer(model.name, error=str(e).splitlines()[0])
        except Exception as e:  # noqa: BLE001 - one request's failure must not take the app down
            log.exception("generation failed for model %s", model.name)
            return Answer(model.name, error=f"generation failed: {type(e).__name__}: {e}".splitlines()[0])
        try:
            ans = self._answer(model.name, media, sample, truth, gen.texts, prompt_style)
        except Exception as e:  # noqa: BLE001 - as above: logged with its traceback, shown in one line
            log.exception("reading the answers of model %s failed", model.name)
            return Answer(
                model.name, list(gen.texts), error=f"scoring failed: {type(e).__name__}: {e}".splitlines()[0]
            )
        ans.tokens, ans.seconds = gen.tokens, gen.seconds
        return ans

    def score(self, media_path, task: str, target: str, prompt: str, prompt_style: str, truth_text: str,
              completion: str) -> TryResult:  # fmt: skip
        """Read and score a completion written elsewhere (in the tuned model's frame) as if it answered."""
        result = TryResult(prompt=(prompt or "").strip())
        try:
            if not (completion or "").strip():
                raise InputError("the completion is empty: paste the model output to read and score")
            media, sample, truth = self._prepare(media_path, task, prompt, truth_text, target,
                                                 self.models[0].coord_space)  # fmt: skip
            result.info = _input_info(media, sample, truth)
            result.answers.append(self._answer("given", media, sample, truth, [completion], prompt_style))
        except (InputError, ValueError) as e:
            result.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        except Exception as e:  # noqa: BLE001 - as in _model_answer: logged, shown in one line
            log.exception("reading a given completion failed")
            result.error = f"scoring failed: {type(e).__name__}: {e}".splitlines()[0]
        return result
