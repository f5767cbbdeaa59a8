"""`iou`: one box, continuous IoU / GIoU, in the record's frame, never gamed by many boxes."""

import pytest
import torch

import rewards

iou = rewards.get("iou")
GT = {"box": [0, 0, 10, 10]}
SIZE = (100, 100)


def score(completion, solution=GT, **kw):
    return iou([completion], solution=[solution], image_size=[SIZE], coord_space=["pixel"], **kw)[0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param('[{"bbox_2d": [0, 0, 10, 10], "label": "dog"}]', 1.0, id="exact_qwen_json"),
        # intersection 5x10 = 50, union 100 + 100 - 50 = 150
        pytest.param("[5, 0, 15, 10]", 50 / 150, id="half_shifted"),
        pytest.param("[10, 10, 0, 0]", 1.0, id="reversed_corners_reordered"),
        pytest.param("[-10, -10, 10, 10]", 1.0, id="negative_clipped_to_image"),
        pytest.param("[50, 50, 60, 60]", 0.0, id="disjoint"),
        pytest.param("[200, 200, 300, 300]", 0.0, id="outside_image"),
        pytest.param("[0, 0, 10, 10] [50, 50, 60, 60]", 0.0, id="two_boxes_hedge"),
        pytest.param("[[0, 0, 10, 10], [0, 0, 10, 10]]", 1.0, id="identical_duplicates_count_once"),
        pytest.param("[0.0, 0.5, 10.0, 10.0]", 0.95, id="floats"),
        pytest.param("[0, 0, NaN, 10]", 0.0, id="nan_is_garbage"),
        pytest.param('{"bbox_2d": [0, 0, 10]}', 0.0, id="three_numbers"),
        pytest.param(
            "<think>[0, 0, 10, 10]</think><answer>[50, 50, 60, 60]</answer>", 0.0, id="box_in_reasoning"
        ),
        pytest.param(
            "<think>[50, 50, 60, 60]</think><answer>[0, 0, 10, 10]</answer>", 1.0, id="answer_box_counts"
        ),
        pytest.param("", 0.0, id="empty"),
        pytest.param("a dog", 0.0, id="no_box"),
        pytest.param("[]", 0.0, id="empty_list_no_box"),
    ],
)
def test_pathologies(completion, expected):
    assert score(completion) == pytest.approx(expected)


def test_giou_rescaled():
    # disjoint boxes [0,0,10,10] and [20,0,30,10]: IoU 0, hull 30x10=300, union 200 -> GIoU -1/3 -> (1-1/3)/2
    assert score("[20, 0, 30, 10]", variant="giou") == pytest.approx((1 - 1 / 3) / 2)
    assert score("[0, 0, 10, 10]", variant="giou") == pytest.approx(1.0)


def test_threshold():
    assert score("[5, 0, 15, 10]", threshold=0.3) == 1.0
    assert score("[5, 0, 15, 10]", threshold=0.5) == 0.0


def test_norm1000_frame_clips_at_1000():
    # Qwen2-VL answers in 0-1000 whatever the image size; the solution is already in that frame
    out = iou(
        ["(500,500),(1200,1000)"],
        solution=[{"box": [500, 500, 1000, 1000]}],
        coord_space=["norm1000"],
        image_size=[(64, 64)],
    )
    assert out == [1.0]


def test_not_applicable_and_metrics():
    out = iou(
        ["[0,0,10,10]", "cat", "a dog", "[1, 2]"],
        solution=[GT, {"label": "cat"}, GT, GT],
        task=["grounding", "classification", "grounding", "grounding"],
    )
    assert out == [1.0, None, 0.0, 0.0]
    assert out.metrics["parse_fail"] == 1.0 and out.metrics["invalid_box"] == 1.0
    assert out.metrics["applicable"] == 3.0


def test_device_param_accepted():
    assert iou(["[0,0,10,10]"], solution=[GT], device=torch.device("cpu")) == [1.0]


def test_bad_solution_names_the_record():
    with pytest.raises(ValueError, match="record 'r7'"):
        iou(["[0,0,1,1]"], solution=[{"box": [0, 0, 1]}], id=["r7"])
