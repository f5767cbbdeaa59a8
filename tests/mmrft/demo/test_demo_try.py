"""The Try tab's handlers with the tiny model: answers parsed in the ORIGINAL frame and drawn there,
rewards when a ground truth is given, the base model beside, and failures that stay in their request."""

import json

import pytest
from demo_helpers import SQUARE, SQUARE_MODEL

from data_pipelines.synthetic.draw import COLORS
from mmrft.demo import drawing, engine
from mmrft.demo.examples import ASSETS, load_examples
from mmrft.demo.handlers import Demo
from mmrft.demo.views import answer_markdown, status_markdown

GROUND = "Find the red square. Answer with <answer>{...}</answer>."


def _answer(box):
    return '<answer>{"bbox_2d": [' + ", ".join(f"{v:g}" for v in box) + "]}</answer>"


def test_a_completion_in_the_model_frame_reads_back_in_original_pixels(tiny_demo, square_png):
    # the square is [28, 22.4, 84, 89.6] in the 140x112 frame the model sees; drawn at [30, 20, 90, 80]
    res = tiny_demo.score(
        square_png, "grounding", "", GROUND, "answer_only", json.dumps(SQUARE), _answer(SQUARE_MODEL)
    )
    assert res.error == ""
    ans = res.answers[0]
    assert ans.predictions[0].boxes[0].box == pytest.approx(SQUARE, abs=1e-4)
    assert ans.rewards == [{"iou": pytest.approx(1.0), "format": 1.0}] and ans.total == [pytest.approx(2.0)]
    assert res.info["original_size"] == [150, 100] and res.info["model_size"] == [140, 112]
    pic = ans.picture
    assert pic.size == (150, 100)  # the original image, not the resized copy
    # completion #1's outline lies on the truth's (drawn first): its colour shows on the square's edges
    assert pic.getpixel((30, 50)) == drawing.color_of(0) and pic.getpixel((89, 50)) == drawing.color_of(0)
    assert pic.getpixel((60, 50)) == COLORS["red"]  # the square itself is untouched inside


def test_truth_and_prediction_are_drawn_apart(tiny_demo, square_png):
    res = tiny_demo.score(
        square_png, "grounding", "", GROUND, "answer_only", "[5, 5, 20, 20]", _answer(SQUARE_MODEL)
    )
    pic = res.answers[0].picture
    assert pic.getpixel((5, 15)) == drawing.TRUTH_COLOR  # truth's left edge at x 5
    assert pic.getpixel((30, 60)) == drawing.color_of(0)  # prediction's left edge at x 30
    assert res.answers[0].rewards[0]["iou"] == pytest.approx(0.0)


def test_without_truth_nothing_is_scored_and_failures_are_captioned(tiny_demo, square_png):
    res = tiny_demo.score(square_png, "detection", "square", "Detect.", "answer_only", "", "no idea")
    ans = res.answers[0]
    assert ans.rewards == [] and ans.total == [] and ans.predictions[0].failure == "parse_fail"
    assert res.info["truth"] is None  # the record's placeholder solution is never shown
    assert ans.picture.size[0] == 150 and ans.picture.size[1] > 100  # a caption band says it was not read
    assert "not read (parse_fail)" in answer_markdown(ans)
    empty = tiny_demo.score(square_png, "detection", "square", "Detect.", "answer_only", "", "  ")
    assert empty.error == "the completion is empty: paste the model output to read and score"


def test_the_tiny_model_answers_and_the_base_answers_beside_it(tiny_demo, square_png):
    both = Demo(
        [tiny_demo.models[0], engine.DemoModel("base", *_fields(tiny_demo.models[0]))], tiny_demo.settings
    )
    res = both.run(square_png, "grounding", "the red square", GROUND, "answer_only", json.dumps(SQUARE),
                   False, 1.0, 6, 3, 7)  # fmt: skip
    assert res.error == "" and [a.model for a in res.answers] == ["tuned", "base"]
    for ans in res.answers:
        assert len(ans.completions) == 3 and all(1 <= n <= 6 for n in ans.tokens)
        assert len(ans.rewards) == 3 and set(ans.rewards[0]) == {"iou", "format"}
    assert res.answers[0].completions == res.answers[1].completions  # same weights, same seed
    again = tiny_demo.run(square_png, "grounding", "", GROUND, "answer_only", "", True, 1.0, 6, 1, 0)
    twice = tiny_demo.run(square_png, "grounding", "", GROUND, "answer_only", "", True, 1.0, 6, 1, 0)
    assert again.answers[0].completions == twice.answers[0].completions  # greedy is deterministic
    assert status_markdown(again).startswith("image 150x100 px, seen by the model at 140x112 px")


def _fields(m):
    return m.path, m.ops, m.processor, m.model_type, m.device


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(prompt=""), "the prompt is empty"),
        (dict(n_samples=3), "greedy decoding gives 3 identical answers"),
        (dict(greedy=False, temperature=0), "temperature must be > 0"),
        (dict(max_new_tokens=0), "max new tokens must be 1..2048"),
        (dict(n_samples=None), "number of samples must be 1..16, got 0"),  # an emptied control
        (dict(truth="[1, 2]"), "ground truth: expected one box"),
        (dict(task="temporal_grounding"), "task 'temporal_grounding' needs a 'video'"),
        (dict(media=None), "no input"),
    ],
)
def test_bad_requests_answer_with_their_message(tiny_demo, square_png, args, message):
    kw = dict(media=square_png, task="grounding", target="", prompt=GROUND, prompt_style="answer_only", truth="",
              greedy=True, temperature=1.0, max_new_tokens=4, n_samples=1, seed=0)  # fmt: skip
    kw.update(args)
    res = tiny_demo.run(kw.pop("media"), *kw.values())
    assert message in res.error and res.answers == []
    assert status_markdown(res).startswith("**Error:** ") and message in status_markdown(res)


def test_a_generation_error_stays_in_its_request(tiny_demo, square_png, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(engine, "generate", broken)
    res = tiny_demo.run(square_png, "grounding", "", GROUND, "answer_only", "", True, 1.0, 4, 1, 0)
    assert (
        res.error == ""
        and res.answers[0].error == "generation failed: RuntimeError: CUDA out of memory (simulated)"
    )
    assert "**Error:** tuned: generation failed" in status_markdown(res)
    monkeypatch.undo()
    ok = tiny_demo.run(square_png, "grounding", "", GROUND, "answer_only", "", True, 1.0, 4, 1, 0)
    assert ok.answers[0].error == "" and len(ok.answers[0].completions) == 1


def test_a_prompt_over_the_budget_names_the_limit(tiny_demo, square_png):
    small = Demo(tiny_demo.models, engine.DemoSettings(max_prompt_length=16))
    res = small.run(square_png, "grounding", "", GROUND, "answer_only", "", True, 1.0, 4, 1, 0)
    assert "over rollout.max_prompt_length=16" in res.answers[0].error


def test_bundled_video_and_chart_examples_are_scored_and_drawn(tiny_demo):
    examples = {e.task: e for e in load_examples()}
    assert set(examples) == {"detection", "grounding", "counting", "temporal_grounding", "chart_to_code"}
    video = examples["temporal_grounding"]
    res = tiny_demo.score(ASSETS / video.file, video.task, video.target, "When?", "answer_only", video.truth,
                          f"<answer>{video.truth}</answer>")  # fmt: skip
    ans = res.answers[0]
    assert ans.predictions[0].segment == (2.0, 3.5) and ans.rewards[0]["temporal_iou"] == pytest.approx(1.0)
    assert res.info["frames"] == 12 and res.info["duration_s"] == 6.0
    assert ans.picture.width >= 480  # the timeline of sampled frames
    chart = examples["chart_to_code"]
    code = f"<answer>```python\n{chart.truth}```</answer>"
    res = tiny_demo.score(ASSETS / chart.file, chart.task, "", "Code?", "answer_only", chart.truth, code)
    ans = res.answers[0]
    assert ans.renders == [""] and ans.rewards[0]["chart_render"] > 0.9  # its own code redraws the chart
    assert ans.picture.width > 2 * 256 * 240 / 192  # the input chart and the render, side by side
