"""The answer rule, label normalisation, JSON and box parsing shared by every reward."""

import math

import pytest

from rewards.boxes import INVALID, parse_boxes
from rewards.columns import completion_text, frame_size
from rewards.parsing import extract_answer, find_numbers, loads_json, normalize_label, strip_template_tokens


@pytest.mark.parametrize(
    "completion, expected, failure",
    [
        pytest.param("<think>it is 3</think><answer>4</answer>", "4", "", id="think_then_answer"),
        pytest.param("<answer> cat </answer><|im_end|>", "cat", "", id="template_token_stripped"),
        pytest.param("cat<|endoftext|>", "cat", "", id="untagged_whole_completion"),
        pytest.param("<think>maybe 3</think> 4", "4", "", id="untagged_reasoning_removed"),
        pytest.param("I count 3</think>5", "5", "", id="lone_think_close_prefilled_template"),
        pytest.param("<think>the answer is 3", None, "empty", id="unclosed_think_is_all_reasoning"),
        pytest.param(
            "<answer>3</answer><answer>4</answer>", None, "multiple_answers", id="two_answer_blocks"
        ),
        pytest.param("<answer>3", None, "unclosed_answer", id="unclosed_answer"),
        pytest.param("3</answer>", None, "unclosed_answer", id="stray_answer_close"),
        pytest.param("</answer>3<answer>", None, "unclosed_answer", id="answer_tags_reversed"),
        pytest.param("<answer>  </answer>", None, "empty", id="empty_answer_block"),
        pytest.param("", None, "empty", id="empty_completion"),
        pytest.param("<|im_end|>", None, "empty", id="only_template_tokens"),
        pytest.param("<answer><answer>3</answer></answer>", None, "multiple_answers", id="nested_answer"),
        pytest.param(
            "<think>draft: <answer>3</answer></think><answer>4</answer>",
            "4",
            "",
            id="answer_inside_think_ignored",
        ),
        pytest.param("<think><answer>3</answer></think>", None, "empty", id="only_answer_inside_think"),
    ],
)
def test_extract_answer(completion, expected, failure):
    ans = extract_answer(completion)
    assert ans.text == expected
    assert ans.failure == failure


def test_extract_answer_never_raises_on_non_strings():
    assert extract_answer(None).failure == "empty"  # type: ignore[arg-type]
    assert extract_answer(b"\xff\x00junk").ok  # type: ignore[arg-type]


def test_strip_template_tokens():
    assert strip_template_tokens("<|im_start|>a<|vision_start|>b<|im_end|>") == "ab"


def test_completion_text_trl_messages_and_parts():
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "y"}]}]) == "y"
    assert completion_text(None) == ""


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("  The Golden_Retriever. ", "golden retriever"),
        ("SPORTS-CAR!", "sports car"),
        ("ｃａｔ", "cat"),  # full-width letters (NFKC)
        ("an apple", "apple"),
        ("", ""),
    ],
)
def test_normalize_label(raw, norm):
    assert normalize_label(raw) == norm


def test_loads_json_fences_nan_and_depth():
    assert loads_json("```json\n[1, 2]\n```") == (True, [1, 2])
    ok, value = loads_json("[NaN, 1]")
    assert ok and math.isnan(value[0])
    assert loads_json("[" * 100000) == (False, None)


def test_find_numbers():
    assert find_numbers("there are 3 cats and -1.5e1 dogs, v2 x") == [3.0, -15.0]


FRAME = (100.0, 50.0)


@pytest.mark.parametrize(
    "answer, boxes",
    [
        pytest.param(
            '[{"bbox_2d": [1, 2, 30, 40], "label": "Dog"}]', [(1, 2, 30, 40, "dog")], id="qwen25_json"
        ),
        pytest.param(
            '```json\n{"bbox_2d": [1, 2, 30, 40]}\n```', [(1, 2, 30, 40, None)], id="fenced_single_object"
        ),
        pytest.param("[1, 2, 30, 40]", [(1, 2, 30, 40, None)], id="bare_list"),
        pytest.param(
            "[[1, 2, 3, 4], [5, 6, 7, 8]]", [(1, 2, 3, 4, None), (5, 6, 7, 8, None)], id="list_of_lists"
        ),
        pytest.param("The box is [1.5, 2, 30, 40].", [(1.5, 2, 30, 40, None)], id="list_in_prose"),
        pytest.param("(10,20),(30,40)", [(10, 20, 30, 40, None)], id="qwen2_points"),
        pytest.param(
            '[{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [5, 6',
            [(1, 2, 3, 4, "a")],
            id="truncated_list_keeps_complete_objects",
        ),
        pytest.param("{'bbox_2d': [1, 2, 3, 4], 'label': 'cat'}", [(1, 2, 3, 4, "cat")], id="python_quotes"),
        pytest.param("[30, 40, 1, 2]", [(1, 2, 30, 40, None)], id="reversed_reordered"),
        pytest.param("[-5, -5, 500, 500]", [(0, 0, 100, 50, None)], id="out_of_image_clipped"),
        pytest.param("[200, 200, 300, 300]", [(100, 50, 100, 50, None)], id="outside_image_zero_area"),
        pytest.param("[]", [], id="empty_list_no_objects"),
        pytest.param("None.", [], id="text_no_objects"),
    ],
)
def test_parse_boxes(answer, boxes):
    parsed = parse_boxes(answer, FRAME)
    assert parsed.ok
    assert [(b.x1, b.y1, b.x2, b.y2, b.label) for b in parsed.boxes] == [
        tuple(map_num(x) for x in b) for b in boxes
    ]


def map_num(x):
    return float(x) if isinstance(x, (int, float)) else x


def test_parse_boxes_invalid_entries_count_as_predictions():
    parsed = parse_boxes('[{"bbox_2d": [1, 2, 3]}, {"bbox_2d": ["a", 1, 2, 3]}, [1, 2, 3, 4]]', FRAME)
    assert parsed.ok and parsed.invalid == 2
    assert parsed.boxes[:2] == [INVALID, INVALID]


def test_parse_boxes_failures():
    assert parse_boxes("a dog", FRAME).failure == "no_boxes"
    assert parse_boxes(None, FRAME).failure == "no_answer"
    assert parse_boxes(str([[0, 0, 1, 1]] * 101), FRAME, max_boxes=100).failure == "too_many_boxes"
    # 1e400 is inf in Python floats: the box is invalid, never a crash
    assert parse_boxes("[0, 0, 1e400, 4]", FRAME).boxes == [INVALID]


def test_confidence_clamped():
    parsed = parse_boxes(
        '[{"bbox_2d": [1, 2, 3, 4], "score": 7}, {"bbox_2d": [1, 2, 3, 4], "confidence": -1}]'
    )
    assert [b.score for b in parsed.boxes] == [1.0, 0.0]


def test_frame_size():
    assert frame_size("norm1000", (640, 480)) == (1000.0, 1000.0)
    assert frame_size("pixel", (640, 480)) == (640.0, 480.0)
    assert frame_size("pixel", None) is None
    assert frame_size(None, (math.nan, 3)) is None


def test_column_helpers_tolerate_missing_short_and_scalar_columns():
    from rewards.columns import column, solutions

    assert column({}, "task", 2) == [None, None]
    assert column({"task": ["a"]}, "task", 3) == ["a", None, None]  # too short: padded
    assert column({"coord_space": "pixel"}, "coord_space", 2) == ["pixel", "pixel"]  # scalar broadcast
    assert solutions({"solution": [{"label": "x"}, None, '{"count": 2}', "not json", 5]}, 5) == [
        {"label": "x"},
        {},
        {"count": 2},
        {},
        {},
    ]
