"""`format`: anchored, single-block, DOTALL structures; template tokens stripped first."""

import pytest

import rewards
from rewards.result import Scores

fmt = rewards.get("format")


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("<think>a</think><answer>b</answer>", 1.0, id="canonical"),
        pytest.param("<think>a\nb</think>\n\n<answer>c\nd</answer>\n", 1.0, id="dotall_and_whitespace"),
        pytest.param("<think>a</think><answer>b</answer><|im_end|>", 1.0, id="template_token_stripped"),
        pytest.param("Sure! <think>a</think><answer>b</answer>", 0.0, id="text_before_not_anchored"),
        pytest.param("<think>a</think><answer>b</answer> trailing", 0.0, id="text_after_not_anchored"),
        pytest.param("<think>a</think><answer>b</answer><answer>c</answer>", 0.0, id="two_answer_blocks"),
        pytest.param("<think>a</think><think>x</think><answer>b</answer>", 0.0, id="two_think_blocks"),
        pytest.param(
            "<think>a<answer>x</answer></think><answer>b</answer>", 0.0, id="answer_nested_in_think"
        ),
        pytest.param("<think>a</think><answer></answer>", 0.0, id="empty_answer"),
        pytest.param("<think> </think><answer>b</answer>", 0.0, id="empty_think"),
        pytest.param("<answer>b</answer><think>a</think>", 0.0, id="wrong_order"),
        pytest.param("<think>a</think><answer>b", 0.0, id="unclosed_answer"),
        pytest.param("", 0.0, id="empty_completion"),
    ],
)
def test_think_answer(completion, expected):
    assert fmt([completion]) == [expected]


def test_empty_think_allowed_by_option():
    assert fmt(["<think></think><answer>b</answer>"], allow_empty_think=True) == [1.0]


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("<answer>cat</answer>", 1.0, id="answer_only"),
        pytest.param(" <answer>cat</answer> <|im_end|>", 1.0, id="whitespace_and_token"),
        pytest.param("<think>a</think><answer>cat</answer>", 0.0, id="thinking_not_allowed"),
        pytest.param("cat", 0.0, id="no_tags"),
        pytest.param("<answer>cat</answer><answer>dog</answer>", 0.0, id="two_blocks"),
    ],
)
def test_answer_only(completion, expected):
    assert fmt([completion], structure="answer_only") == [expected]


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        pytest.param(
            '[{"bbox_2d": [1, 2, 3, 4], "label": "dog"}]', {"boxes": [], "labels": []}, 1.0, id="boxes"
        ),
        pytest.param("[]", {"boxes": [], "labels": []}, 1.0, id="boxes_empty_list"),
        pytest.param(
            '<answer>{"bbox_2d": [1, 2, 3, 4]}</answer>', {"box": [0, 0, 1, 1]}, 1.0, id="box_in_tags"
        ),
        pytest.param("```json\n[1, 2, 3, 4]\n```", {"box": [0, 0, 1, 1]}, 1.0, id="box_fenced"),
        pytest.param('{"bbox_2d": [1, 2, 3]}', {"box": [0, 0, 1, 1]}, 0.0, id="box_three_numbers"),
        pytest.param("[1, 2, NaN, 4]", {"box": [0, 0, 1, 1]}, 0.0, id="box_nan"),
        pytest.param("3", {"count": 3}, 1.0, id="number"),
        pytest.param('"3"', {"count": 3}, 0.0, id="number_as_string"),
        pytest.param("[1.5, 2]", {"segment": [1, 2]}, 1.0, id="segment"),
        pytest.param("the box is [1, 2, 3, 4]", {"box": [0, 0, 1, 1]}, 0.0, id="prose_is_not_json"),
        pytest.param('{"a": 1}', {"label": "cat"}, 1.0, id="any_json_for_labels"),
    ],
)
def test_json(completion, solution, expected):
    assert fmt([completion], structure="json", solution=[solution]) == [expected]


def test_json_explicit_shape():
    assert fmt(['"cat"', "3"], structure="json", json_shape="string") == [1.0, 0.0]


def test_none_structure_is_always_one():
    assert fmt(["", "junk"], structure="none") == [1.0, 1.0]


def test_trl_message_completions_and_metrics():
    out = fmt(
        [[{"role": "assistant", "content": "<think>a</think><answer>b</answer>"}], "x"], prompts=[[], []]
    )
    assert isinstance(out, Scores) and out == [1.0, 0.0]
    assert out.metrics["malformed"] == 1.0


def test_unknown_structure_is_a_one_line_error():
    with pytest.raises(ValueError, match="format.structure: .xml. is not allowed; choose from think_answer"):
        fmt(["x"], structure="xml")
