"""The task registry: every task has a complete spec, and a task registered in one place (here, a test)
reaches validation, loading, preview, SFT targets, default rewards and evaluation without any other
file knowing its name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

import rewards
from data_pipelines.dataset import RecordDataset
from data_pipelines.preview import render_cell
from data_pipelines.records import RecordError, check_record
from data_pipelines.sample import Sample, VideoClip
from data_pipelines.tasks import TASKS, TaskSpec, get_task, register_task, task_names, unregister_task
from data_pipelines.tasks.base import Solution, box_json

FAMILIES = (
    "classification",
    "counting",
    "grounding",
    "detection",
    "temporal_grounding",
    "tracking",
    "chart_to_code",
)
GENERATORS = ("shapes", "video", "charts")


def _sample(spec: TaskSpec, solution: Solution) -> Sample:
    """A model-frame sample of ``spec`` whose frame (112 x 112) holds the example's boxes."""
    s = Sample(id=f"{spec.name}-0", task=spec.name, prompt=[], solution=solution, solution_original=solution)
    if spec.needs_video:
        s.video = VideoClip(np.zeros((4, 112, 112, 3), np.uint8), [0.0, 0.5, 1.0, 1.5], 2.0, 8.0)
    else:
        s.images, s.scales, s.original_sizes = [Image.new("RGB", (112, 112))], [(1.0, 1.0)], [(112, 112)]
    return s


def _record(task: str, solution: Solution, video: bool = False) -> dict:
    rec = {"id": "r", "task": task, "prompt": "look", "solution": solution}
    rec.update({"video": "clip.mp4"} if video else {"images": ["a.png"]})
    return rec


def test_builtin_tasks_register_in_report_order():
    assert task_names()[:7] == FAMILIES  # each built-in task is its own evaluation family


@pytest.mark.parametrize("name", list(TASKS))
def test_every_registered_task_has_a_complete_spec(name):
    spec = get_task(name)
    assert spec.name == name and spec.eval_family in FAMILIES
    assert spec.synthetic is None or spec.synthetic in GENERATORS
    for reward in spec.default_rewards:
        assert callable(rewards.registry.get(reward)), reward
    out = check_record(_record(name, spec.example, spec.needs_video))  # the example is a valid solution
    assert out["task"] == name
    caption = spec.caption(_sample(spec, spec.example))
    assert isinstance(caption, str) and caption.strip()
    for keys in spec.solution_keys:  # dropping a required key group is a one-line missing_field error
        broken = {k: v for k, v in spec.example.items() if k not in keys}
        if not any(all(broken.get(k) is not None for k in g) for g in spec.solution_keys):
            with pytest.raises(RecordError, match=f"task '{name}' needs solution key") as e:
                check_record(_record(name, broken, spec.needs_video))
            assert e.value.reason == "missing_field" and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name", [n for n in TASKS if get_task(n).answer is not None and n != "chart_to_code"]
)
def test_every_reference_answer_scores_its_default_rewards_perfectly(name):
    """The SFT target of the spec's example, scored by the task's own rewards, is a perfect answer."""
    from mmrft.config import RewardSpec
    from mmrft.data import sft_target
    from mmrft.scoring import RewardStack

    spec = get_task(name)
    sample = _sample(spec, spec.example)
    target = sft_target(sample, "answer_only")
    assert target.startswith("<answer>") and target.endswith("</answer>")
    scored = RewardStack([RewardSpec(r) for r in spec.default_rewards])([target], [sample])
    assert scored.per_reward.tolist() == [[1.0]] * len(spec.default_rewards), (name, target)


def test_tracking_and_chart_targets():
    from mmrft.data import answer_text

    track = get_task("tracking")
    with pytest.raises(ValueError, match="no SFT target for task 'tracking'; add a 'response' column"):
        answer_text(_sample(track, track.example))
    chart = get_task("chart_to_code")
    assert answer_text(_sample(chart, chart.example)) == f"```python\n{chart.example['code']}\n```"
    with pytest.raises(ValueError, match="no SFT target"):  # a reference image only: no code to imitate
        answer_text(_sample(chart, {"image": "ref.png"}))


def test_a_label_in_the_solution_is_the_answer_except_for_detection():
    from mmrft.data import answer_text

    grounding, detection = get_task("grounding"), get_task("detection")
    assert answer_text(_sample(grounding, {"box": [1, 2, 30, 40], "label": "dog"})) == "dog"
    sol = dict(detection.example, label="pets")
    assert json.loads(answer_text(_sample(detection, sol)))[1] == {
        "bbox_2d": [70, 10, 100, 50],
        "label": "cat",
    }


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="task 'grounding' is registered already"):
        register_task(get_task("grounding"))
    with pytest.raises(KeyError, match="unknown task 'nope'; known: classification, counting"):
        get_task("nope")
    with pytest.raises(ValueError, match="default_rewards needs at least one reward"):
        dataclasses.replace(get_task("counting"), default_rewards=())


# ---- a new task, defined here only ----------------------------------------------------------------------


def _check_phrase(solution: Solution) -> None:
    if not isinstance(solution["phrase"], str) or not solution["phrase"].strip():
        raise RecordError("empty_label", "solution.phrase must be a non-empty string")


PHRASE = TaskSpec(
    name="phrase_grounding",
    solution_keys=(("box", "phrase"),),
    check=_check_phrase,
    answer=lambda sol: json.dumps({"bbox_2d": box_json(sol["box"])}),
    caption=lambda sample: f"{sample.solution['phrase']} at {box_json(sample.solution['box'])}",
    default_rewards=("iou", "format"),
    eval_family="grounding",
    example={"box": [8, 16, 40, 60], "phrase": "the dog"},
    draw_boxes=lambda sol: ([sol["box"]], [sol["phrase"]]),
)


@pytest.fixture
def phrase_task():
    register_task(PHRASE)
    yield PHRASE
    unregister_task(PHRASE.name)


def test_a_new_task_is_validated_loaded_previewed_and_given_targets(phrase_task, tmp_path):
    from mmrft.data import sft_target

    with pytest.raises(RecordError, match="task 'phrase_grounding' needs solution key"):
        check_record(_record("phrase_grounding", {"box": [1, 2, 3, 4]}))
    with pytest.raises(RecordError, match="solution.phrase must be a non-empty string"):
        check_record(_record("phrase_grounding", {"box": [1, 2, 3, 4], "phrase": " "}))
    with pytest.raises(RecordError, match="needs a 'video'"):  # needs_video alone makes video required
        register_task(dataclasses.replace(PHRASE, needs_video=True), replace=True)
        try:
            check_record(_record("phrase_grounding", PHRASE.example))
        finally:
            register_task(PHRASE, replace=True)

    # 224 x 224 image: smart-resize keeps it, so the model frame is the original frame
    Image.new("RGB", (224, 224), (255, 255, 255)).save(tmp_path / "a.png")
    rec = _record("phrase_grounding", {"box": [20, 40, 100, 120], "phrase": "the dog"})
    ds = RecordDataset([rec], tmp_path)
    sample = ds[0]
    assert sample.task == "phrase_grounding" and sample.solution["box"] == [20.0, 40.0, 100.0, 120.0]
    assert sft_target(sample, "plain") == '{"bbox_2d": [20, 40, 100, 120]}'

    tile = np.asarray(render_cell(sample, cell=224))
    assert (tile[40, 21:99] == (255, 0, 255)).all()  # draw_boxes: the box top is drawn in the first colour
    assert (tile[10, 21:99] == (255, 255, 255)).all()  # and nothing above it
    blank = np.asarray(
        render_cell(dataclasses.replace(sample, task="classification", solution={"label": "x"}))
    )
    assert (blank[40, 21:99] == (255, 255, 255)).all()  # a task without draw_boxes draws none


def test_a_new_task_gets_its_default_rewards_and_evaluation(phrase_task, tmp_path):
    from mmrft.evaluation import parse_prediction
    from mmrft.evaluation.runner import default_rewards, task_rewards

    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(_record("phrase_grounding", PHRASE.example)) + "\n")
    assert task_rewards("phrase_grounding") == ("iou", "format")
    assert default_rewards(data) == ["iou", "format"]

    sample = _sample(PHRASE, PHRASE.example)
    pred = parse_prediction(sample, '<answer>{"bbox_2d": [8, 16, 40, 60]}</answer>')
    assert pred.ok and pred.task == "phrase_grounding" and pred.boxes[0].box == [8.0, 16.0, 40.0, 60.0]
    assert pred.to_json()["boxes"][0]["box"] == [8.0, 16.0, 40.0, 60.0]  # serialised as grounding

    from mmrft.config import RewardSpec
    from mmrft.evaluation import ParseOptions
    from mmrft.evaluation.metrics import summarize
    from mmrft.evaluation.records import Scorer
    from mmrft.scoring import RewardStack

    scorer = Scorer(RewardStack([RewardSpec("iou")]), ParseOptions())
    answers = ['{"bbox_2d": [8, 16, 40, 60]}', '{"bbox_2d": [8, 16, 24, 60]}']  # IoU 1, then 16/32 = 0.5
    results, tally = scorer.score([(0, sample, [answers[0]]), (1, sample, [answers[1]])])
    m = summarize(results, scorer.names, 1, scorer.options, tally)
    assert m["phrase_grounding/mIoU"] == pytest.approx(0.75) and m["phrase_grounding/Acc@0.5"] == 1.0
