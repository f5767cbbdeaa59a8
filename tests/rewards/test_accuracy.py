"""`accuracy`: normalised exact match, closed label sets, hedges, letters and indices."""

import pytest

import rewards

acc = rewards.get("accuracy")
CAT = {"label": "golden_retriever"}
CHOICES = {"label": "cat", "choices": ["dog", "cat", "bird"]}


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        pytest.param("<answer>Golden Retriever.</answer>", CAT, 1.0, id="case_space_underscore_punct"),
        pytest.param("  golden-retriever ", CAT, 1.0, id="untagged_hyphen"),
        pytest.param(
            "<think>golden retriever</think><answer>poodle</answer>", CAT, 0.0, id="reasoning_never_counts"
        ),
        pytest.param("<think>poodle</think>golden retriever", CAT, 1.0, id="untagged_after_think"),
        pytest.param("<answer></answer>", CAT, 0.0, id="empty_answer_scores_zero"),
        pytest.param("", CAT, 0.0, id="empty_completion_scores_zero"),
        pytest.param("golden retriever or poodle", CAT, 0.0, id="hedge_or"),
        pytest.param("golden retriever, poodle", CAT, 0.0, id="multiple_labels"),
        pytest.param("golden retriever/poodle", CAT, 0.0, id="hedge_slash"),
        pytest.param("<answer>poodle</answer><answer>golden retriever</answer>", CAT, 0.0, id="two_answers"),
        pytest.param("<answer>golden retriever", CAT, 0.0, id="unclosed_answer"),
        pytest.param("cat", CHOICES, 1.0, id="closed_set_correct"),
        pytest.param("dog", CHOICES, 0.0, id="closed_set_wrong"),
        pytest.param("kitten", {"label": "kitten", "choices": ["dog", "cat"]}, 0.0, id="outside_closed_set"),
        pytest.param("dog or cat", CHOICES, 0.0, id="closed_set_hedge"),
        pytest.param("cat<|im_end|>", CHOICES, 1.0, id="template_token"),
    ],
)
def test_labels(completion, solution, expected):
    assert acc([completion], solution=[solution]) == [expected]


LETTER = {"label": "cat", "choices": ["dog", "cat", "bird"], "answer_format": "letter"}
INDEX = {"label": "bird", "choices": ["dog", "cat", "bird"], "answer_format": "index"}


@pytest.mark.parametrize(
    "completion, solution, expected",
    [
        pytest.param("B", LETTER, 1.0, id="letter"),
        pytest.param("(b)", LETTER, 1.0, id="letter_parenthesised_lower"),
        pytest.param("B. cat", LETTER, 1.0, id="letter_with_matching_text"),
        pytest.param("Option B", LETTER, 1.0, id="option_letter"),
        pytest.param("cat", LETTER, 1.0, id="choice_text_accepted"),
        pytest.param("B) dog", LETTER, 0.0, id="letter_text_contradict"),
        pytest.param("A", LETTER, 0.0, id="wrong_letter"),
        pytest.param("A or B", LETTER, 0.0, id="letter_hedge"),
        pytest.param("Z", LETTER, 0.0, id="letter_out_of_range"),
        pytest.param("B", {**LETTER, "label": "B"}, 1.0, id="label_given_as_letter"),
        pytest.param("3", INDEX, 1.0, id="index_one_based"),
        pytest.param("2", INDEX, 0.0, id="index_wrong"),
        pytest.param("3 or 2", INDEX, 0.0, id="index_hedge"),
    ],
)
def test_letters_and_indices(completion, solution, expected):
    assert acc([completion], solution=[solution]) == [expected]


def test_index_base_zero():
    assert acc(["2"], solution=[INDEX], index_base=0) == [1.0]


def test_synonyms_map_both_sides_and_closed_set():
    syn = {"automobile": ["car", "auto"]}
    assert acc(["car", "auto", "truck"], solution=[{"label": "automobile"}] * 3, synonyms=syn) == [
        1.0,
        1.0,
        0.0,
    ]
    closed = {"label": "automobile", "choices": ["automobile", "truck"]}
    assert acc(["car"], solution=[closed], synonyms=syn) == [1.0]


def test_not_applicable_and_missing_columns():
    # a grounding record, a record with no solution at all, and a dataset that lost its labels (None)
    out = acc(
        ["x", "y", "z"], solution=[{"box": [0, 0, 1, 1]}, None, {"label": None}], task=["grounding"] * 3
    )
    assert out == [None, None, None]
    assert acc(["x"]) == [None]


def test_parse_failures_reported_as_metric():
    out = acc(["<answer>cat", "cat", "<answer></answer>"], solution=[CHOICES] * 3, unknown_kwarg=1)
    assert out == [0.0, 1.0, 0.0]
    assert out.metrics["parse_fail"] == 2.0


def test_solution_json_string_column():
    assert acc(["cat"], solution=['{"label": "cat"}']) == [1.0]


def test_bad_answer_format_names_the_record():
    with pytest.raises(ValueError, match="record 'c1': solution answer_format must be one of"):
        acc(["A"], solution=[{"label": "cat", "answer_format": "roman"}], id=["c1"])
