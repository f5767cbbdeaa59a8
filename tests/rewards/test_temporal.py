"""`temporal_iou`: [start, end] seconds, the papers' formats and variants."""

import pytest

import rewards
from rewards.temporal import parse_segment, parse_times

tiou = rewards.get("temporal_iou")
SEG = {"segment": [10.0, 20.0], "duration": 40.0}


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("[10, 20]", 1.0, id="json_list"),
        pytest.param('{"start": 10, "end": 20}', 1.0, id="json_object"),
        pytest.param("10.0s to 20.0s", 1.0, id="seconds_suffix"),
        pytest.param("10 - 20", 1.0, id="dash_range_not_minus"),
        pytest.param("from 0:10 to 0:20", 1.0, id="mm_ss"),
        pytest.param("[20, 10]", 1.0, id="reversed_reordered"),
        # [15, 25]: intersection 5, union 15
        pytest.param("15 to 25", 5 / 15, id="partial"),
        # JSON keeps the sign: [-10, 20] clips to [0, 20]; IoU with [10, 20] is 10 / 20
        pytest.param("[-10, 20]", 0.5, id="clipped_to_zero"),
        # [10, 1e9] clips to [10, 40]: IoU 10 / 30
        pytest.param("[10, 1e9]", 10 / 30, id="clipped_to_duration"),
        pytest.param("<think>10 to 20</think><answer>30 to 40</answer>", 0.0, id="reasoning_never_counts"),
        pytest.param("10 to 20 or 25 to 30", 0.0, id="two_segments_hedge"),
        pytest.param("at 10", 0.0, id="one_time"),
        pytest.param("[10, NaN]", 0.0, id="nan"),
        pytest.param("", 0.0, id="empty"),
        pytest.param("[15, 15]", 0.0, id="zero_length"),
    ],
)
def test_pathologies(completion, expected):
    assert tiou([completion], solution=[SEG]) == [pytest.approx(expected)]


def test_iou_v2_time_r1():
    # [15, 25] vs [10, 20] with D = 40: IoU 1/3 * (1 - 5/40) * (1 - 5/40)
    assert tiou(["15 to 25"], solution=[SEG], variant="iou_v2") == [pytest.approx(1 / 3 * 0.875 * 0.875)]


def test_threshold_r1_at():
    assert tiou(["15 to 25", "12 to 20"], solution=[SEG] * 2, threshold=0.5) == [0.0, 1.0]


def test_parse_times():
    assert parse_times("1:02 to 1:10, 1:00:01.5") == [62.0, 70.0, 3601.5]
    assert parse_segment("12.5s to 17.8s") == ((12.5, 17.8), "")


def test_not_applicable():
    out = tiou(["1 to 2", "x"], solution=[{"label": "x"}, SEG])
    assert out == [None, 0.0] and out.metrics["parse_fail"] == 1.0
