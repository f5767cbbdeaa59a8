"""Hand-computed metrics: grounding Acc@0.5 (IoU exactly 0.5 counts), temporal R1@m and mIoU,
classification near-miss labels, counting MAE, tracking mIoU; failed records count as wrong."""

import pytest
from PIL import Image

from data_pipelines.sample import Sample
from mmrft.config import RewardSpec
from mmrft.evaluation import ParseOptions, Scorer, parse_prediction
from mmrft.evaluation.metrics import summarize
from mmrft.evaluation.records import failed_result
from mmrft.scoring import RewardStack


def _image_sample(i, task, solution_original, scale, size, **kw):
    """A Sample the model sees at ``size * scale`` (ground truth mapped like the pipeline does)."""
    sx, sy = scale
    model_size = (round(size[0] * sx), round(size[1] * sy))
    sol = dict(solution_original)
    if "box" in sol:
        b = sol["box"]
        sol["box"] = [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]
    return Sample(f"r{i}", task, [{"role": "user", "content": "q"}], images=[Image.new("RGB", model_size)],
                  solution=sol, solution_original=dict(solution_original), scales=[scale], original_sizes=[size],
                  **kw)  # fmt: skip


def _score(items, rewards, k=1):
    scorer = Scorer(RewardStack([RewardSpec(r) for r in rewards]), ParseOptions())
    results, tally = scorer.score(items)
    return results, summarize(results, scorer.names, k, scorer.options, tally)


def test_grounding_acc_at_half_counts_iou_exactly_half_in_original_pixels():
    # original 200 x 100, seen at 0.7 x 0.35 (140 x 35): 0.7 and 0.35 are not exact in binary, so
    # mapping back rounds; the ground truth box [0, 0, 100, 100] has area 10000
    gt = {"box": [0, 0, 100, 100]}
    answers = [
        "[0, 0, 70, 17.5]",  # original [0, 0, 100, 50]: IoU 0.5 exactly -> counts
        "[0, 0, 68.6, 17.5]",  # [0, 0, 98, 50]: IoU 0.49 -> does not
        '{"bbox_2d": [0, 0, 70, 35]}',  # the box itself: IoU 1
        "[0, 0, 70, 35] [0, 0, 7, 3.5]",  # two different boxes: a hedge, scored 0 like the reward
        "somewhere on the left",  # unparsable: 0
    ]
    items = [
        (i, _image_sample(i, "grounding", gt, (0.7, 0.35), (200, 100)), [a]) for i, a in enumerate(answers)
    ]
    results, m = _score(items, ["iou"])
    ious = [r.values[0]["iou"] for r in results]
    assert ious[:3] == pytest.approx([0.5, 0.49, 1.0], abs=1e-12)
    assert ious[3:] == [0.0, 0.0]
    assert results[0].predictions[0].boxes[0].box == pytest.approx([0, 0, 100, 50], abs=1e-9)
    assert [r.predictions[0].failure for r in results] == ["", "", "", "multiple_boxes", "parse_fail"]
    assert m["grounding/Acc@0.5"] == pytest.approx(2 / 5)
    assert m["grounding/mIoU"] == pytest.approx((0.5 + 0.49 + 1.0) / 5)
    assert m["grounding/parse_fail_rate"] == pytest.approx(2 / 5)
    # the same IoU the training reward gives in the model frame
    assert [r.rewards[0]["iou"] for r in results] == pytest.approx(ious, abs=1e-6)  # float32 there


def test_temporal_r1_at_m_and_miou():
    gt = {"segment": [2.0, 6.0], "duration": 10.0}
    answers = {
        "2 to 6": 1.0,
        "3.0s to 7.0s": 3 / 5,
        "2 - 4": 2 / 4,  # exactly 0.5: counts for R1@0.5
        "0:00 to 0:04": 2 / 6,
        "<think>it is 2 to 6</think><answer>5 to 9</answer>": 1 / 7,  # the reasoning never counts
        "4 to 10.4": 2 / 8,  # clipped to the 10 s video: [4, 10]
        "no idea": 0.0,
    }
    items = [
        (i, Sample(f"r{i}", "temporal_grounding", [], solution=gt, solution_original=gt), [a])
        for i, a in enumerate(answers)
    ]
    results, m = _score(items, ["temporal_iou"])
    assert [r.values[0]["iou"] for r in results] == pytest.approx(list(answers.values()), abs=1e-12)
    assert results[5].predictions[0].segment == (4.0, 10.0)
    # IoUs 1, .6, .5, .333, .143, .25, 0
    assert m["temporal_grounding/R1@0.3"] == pytest.approx(4 / 7)
    assert m["temporal_grounding/R1@0.5"] == pytest.approx(3 / 7)
    assert m["temporal_grounding/R1@0.7"] == pytest.approx(1 / 7)
    assert m["temporal_grounding/mIoU"] == pytest.approx(sum(answers.values()) / 7)
    assert m["temporal_grounding/parse_fail_rate"] == pytest.approx(1 / 7)


def test_classification_near_misses_are_wrong():
    sol = {"label": "golden retriever", "choices": ["golden retriever", "labrador retriever", "retriever"]}
    answers = {
        "Golden_Retriever.": 1.0,  # case, underscore, punctuation: the reward's normalisation
        "<answer>The golden retriever</answer>": 1.0,  # a leading article
        "golden retrievers": 0.0,  # a near miss, and not in the label set
        "retriever": 0.0,  # in the label set, but another label
        "a golden retriever dog": 0.0,  # a substring match (CLS-RL) would count this
        "golden retriever or labrador retriever": 0.0,  # a hedge
        "<answer>golden retriever": 0.0,  # unclosed tag: a parse failure
    }
    items = [
        (i, Sample(f"r{i}", "classification", [], solution=sol, solution_original=sol), [a])
        for i, a in enumerate(answers)
    ]
    results, m = _score(items, ["accuracy"])
    assert [r.values[0]["correct"] for r in results] == list(answers.values())
    assert [r.rewards[0]["accuracy"] for r in results] == list(answers.values())  # same as training
    assert m["classification/accuracy"] == pytest.approx(2 / 7)
    assert m["classification/out_of_set_rate"] == pytest.approx(3 / 7)  # retrievers, ...dog, ...or...
    assert m["classification/parse_fail_rate"] == pytest.approx(1 / 7)
    assert results[0].predictions[0].label == "golden retriever"


def test_counting_accuracy_and_mae():
    cases = [(3, "3"), (3, "There are 5."), (3, "two"), (3, "3 or 4"), (3, "<answer>7</answer>"), (0, "0")]
    items = [
        (i, Sample(f"r{i}", "counting", [], solution={"count": c}, solution_original={"count": c}), [a])
        for i, (c, a) in enumerate(cases)
    ]
    results, m = _score(items, ["counting"])
    # errors 0, 2, 1, (ambiguous: no count), 4, 0
    assert m["counting/accuracy"] == pytest.approx(2 / 6)
    assert m["counting/MAE"] == pytest.approx((0 + 2 + 1 + 4 + 0) / 5)
    assert m["counting/MAE_records"] == 5.0
    assert m["counting/parse_fail_rate"] == pytest.approx(1 / 6)
    assert results[3].predictions[0].failure == "ambiguous"


def test_tracking_mean_per_frame_iou_in_original_pixels():
    # 3 sampled frames, original 100 x 100 seen at 0.5: the object is gone in the last frame
    gt = {"boxes": [[0, 0, 40, 40], [20, 20, 60, 60], None]}
    import numpy as np

    from data_pipelines.sample import VideoClip

    clip = VideoClip(np.zeros((3, 50, 50, 3), np.uint8), [0.0, 1.0, 2.0], 1.0, 3.0, original_size=(100, 100),
                     scale=(0.5, 0.5))  # fmt: skip
    model_gt = {"boxes": [[0, 0, 20, 20], [10, 10, 30, 30], None]}

    def sample(i):
        return Sample(f"r{i}", "tracking", [], video=clip, solution=model_gt, solution_original=gt)

    answers = [
        "[[0, 0, 20, 20], [10, 10, 30, 30], null]",  # 1, 1, both absent 1 -> 1
        "[[0, 0, 20, 10], [10, 10, 30, 30], [0, 0, 5, 5]]",  # 0.5, 1, a box where there is none 0 -> 0.5
        "[[0, 0, 20, 20]]",  # one frame of three: 1 / 3
    ]
    results, m = _score([(i, sample(i), [a]) for i, a in enumerate(answers)], ["tracking"])
    assert [r.values[0]["miou"] for r in results] == pytest.approx([1.0, 0.5, 1 / 3])
    # the tracking reward agrees
    assert [r.rewards[0]["tracking"] for r in results] == pytest.approx([1.0, 0.5, 1 / 3])
    assert m["tracking/mIoU"] == pytest.approx((1 + 0.5 + 1 / 3) / 3)
    assert results[1].predictions[0].track[0].box == [0.0, 0.0, 40.0, 20.0]  # original pixels


def test_failed_and_missing_records_count_as_wrong_and_are_reported():
    sol = {"label": "cat"}
    ok = [(0, Sample("r0", "classification", [], solution=sol, solution_original=sol), ["cat"])]
    scorer = Scorer(RewardStack([RewardSpec("accuracy")]), ParseOptions())
    results, _ = scorer.score(ok)
    rec = {"id": "r1", "task": "classification", "solution": sol}
    results += [failed_result(1, rec, "load_failed", "x.jsonl:2: record 'r1': file not found: a.png"),
                failed_result(2, {**rec, "id": "r2"}, "missing_prediction")]  # fmt: skip
    m = summarize(results, scorer.names, 1, scorer.options)
    assert m["classification/accuracy"] == pytest.approx(1 / 3)
    assert m["classification/failed_rate"] == pytest.approx(2 / 3)
    assert m["failed_rate"] == pytest.approx(2 / 3) and m["n"] == 3.0
    assert m["reward"] == 1.0  # the reward mean is over completions that were scored
    assert results[1].to_json() == {"id": "r1", "task": "classification", "status": "load_failed",
                                    "error": "x.jsonl:2: record 'r1': file not found: a.png"}  # fmt: skip


def test_k_samples_average_over_k_and_report_pass_at_k():
    sol = {"label": "cat"}
    items = [
        (
            0,
            Sample("r0", "classification", [], solution=sol, solution_original=sol),
            ["cat", "dog", "cat", "cow"],
        ),
        (
            1,
            Sample("r1", "classification", [], solution=sol, solution_original=sol),
            ["dog", "dog", "dog", "dog"],
        ),
    ]
    results, m = _score(items, ["accuracy"], k=4)
    # completion index 0: 1/2 right, 1: 0, 2: 1/2, 3: 0 -> mean 0.25; record 0 has a right one, record 1 none
    assert m["classification/accuracy"] == pytest.approx(0.25)
    assert m["pass@1"] == pytest.approx(0.25) and m["pass@4"] == pytest.approx(0.5)


def test_parse_prediction_maps_detection_boxes_to_the_original_frame():
    sol = {"boxes": [[10, 10, 50, 50]], "labels": ["dog"]}
    s = _image_sample(0, "detection", sol, (0.5, 0.25), (200, 400))  # model frame 100 x 100
    text = '<think>two</think><answer>[{"bbox_2d": [5, 5, 25, 25], "label": "Dog", "score": 0.4}, ' \
           '{"bbox_2d": [200, 0, 30, 50], "label": "cat"}, {"bbox_2d": [1, 2, 3]}]</answer>'  # fmt: skip
    pred = parse_prediction(s, text)
    assert pred.ok and pred.answer.startswith("[{")
    # canonical order: no confidence (1.0) first; reversed corners reordered and clipped to the 100 px frame
    assert [(b.box, b.label, b.score) for b in pred.boxes] == [
        ([60.0, 0.0, 200.0, 200.0], "cat", None),
        ([10.0, 20.0, 50.0, 100.0], "dog", 0.4),
        (None, None, None),  # malformed: kept, matches nothing
    ]
    assert pred.to_json()["boxes"][1] == {"box": [10.0, 20.0, 50.0, 100.0], "label": "dog", "score": 0.4}


BAR = (
    "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\n"
    "ax.bar(['a', 'b', 'c'], [3, 5, 2], color=['#1f77b4', '#ff7f0e', '#2ca02c'])\nax.set_title('Fruit')\n"
)
CHART_PARAMS = dict(timeout_s=3.0, memory_mb=512, workers=2, width_px=160, height_px=120, dpi=40)


@pytest.mark.parametrize("configured", [True, False])
def test_chart_execution_rate_and_render_score(configured):
    sol = {"code": BAR}
    answers = [f"```python\n{BAR}```", "```python\nraise RuntimeError('x')\n```", "<answer></answer>"]
    items = [
        (i, Sample(f"r{i}", "chart_to_code", [], solution=sol, solution_original=sol), [a])
        for i, a in enumerate(answers)
    ]
    spec = RewardSpec("chart_render", 1.0, CHART_PARAMS) if configured else RewardSpec("format")
    scorer = Scorer(RewardStack([spec]), ParseOptions())
    results, tally = scorer.score(items)
    results.append(
        failed_result(3, {"id": "r3", "task": "chart_to_code", "solution": sol}, "missing_prediction")
    )
    m = summarize(results, scorer.names, 1, scorer.options, tally)
    # the reference code itself renders and scores 1; the crash and the missing code do not run
    assert m["chart_to_code/exec_rate"] == pytest.approx(1 / 4)
    assert m["chart_to_code/score"] == pytest.approx(1 / 4, abs=1e-6)
    assert m["chart_to_code/element"] == pytest.approx(1.0, abs=1e-6)
    assert m["chart_to_code/visual"] == pytest.approx(1.0, abs=1e-6)
    assert m["chart_to_code/fail/error_rate"] == pytest.approx(1 / 4)
    assert m["chart_to_code/code_rate"] == pytest.approx(2 / 4)
    assert [r.predictions[0].code for r in results[:3]] == [BAR.strip(), "raise RuntimeError('x')", None]


@pytest.mark.parametrize(
    "task,reward,key",
    [
        ("classification", "accuracy", "accuracy"),
        ("counting", "counting", "accuracy"),
        ("grounding", "iou", "Acc@0.5"),
        ("detection", "detection", "AP50"),
    ],
)
def test_reference_answers_score_perfectly(tmp_path, task, reward, key):
    """The SFT targets (the ground truth written in the model's frame, rounded to whole pixels) read
    back in original pixels: every metric is perfect, "no objects" records included."""
    from data_pipelines.dataset import JsonlDataset
    from data_pipelines.synthetic import write_shapes_dataset
    from mmrft.data import answer_text

    ds = JsonlDataset(write_shapes_dataset(tmp_path, task=task, n=24, seed=5, image_size=150, split="x"))
    samples = [ds[i] for i in range(len(ds))]
    assert samples[0].scales[0] != (1.0, 1.0)  # 150 px is resized: the mapping back is exercised
    results, m = _score([(i, s, [answer_text(s)]) for i, s in enumerate(samples)], [reward])
    assert m[f"{task}/{key}"] == 1.0 and m[f"{task}/parse_fail_rate"] == 0.0 and m["pass@1"] == 1.0
