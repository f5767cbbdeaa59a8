"""`counting`: one integer answer, exact match, optional relative-error credit."""

import pytest

import rewards

count = rewards.get("counting")
FIVE = {"count": 5}


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("<answer>5</answer>", 1.0, id="exact"),
        pytest.param("There are 5 dogs.", 1.0, id="number_in_sentence"),
        pytest.param("five", 1.0, id="number_word"),
        pytest.param("5.0", 1.0, id="integral_float"),
        pytest.param('{"count": 5}', 1.0, id="json_count"),
        pytest.param(
            "<think>I see 5 dogs</think><answer>4</answer>", 0.0, id="number_in_reasoning_never_counts"
        ),
        pytest.param("<think>I see 5 dogs</think>", 0.0, id="only_reasoning"),
        pytest.param("4 or 5", 0.0, id="hedge_two_numbers"),
        pytest.param("between 4 and 6", 0.0, id="range_hedge"),
        pytest.param("5.5", 0.0, id="non_integer"),
        pytest.param("-5", 0.0, id="negative"),
        pytest.param("", 0.0, id="empty"),
        pytest.param("many", 0.0, id="no_number"),
        pytest.param("<answer>5</answer><answer>5</answer>", 0.0, id="two_answer_blocks"),
        pytest.param("5, 5", 1.0, id="same_number_repeated"),
        pytest.param("1e400", 0.0, id="infinite"),
        pytest.param("someone saw 5", 1.0, id="word_inside_word_ignored"),
    ],
)
def test_pathologies(completion, expected):
    assert count([completion], solution=[FIVE]) == [expected]


def test_relative_error_credit():
    # |4 - 5| / 5 = 0.2 -> 0.8; |12 - 5| / 5 > 1 -> 0; ground truth 0 divides by 1
    out = count(["4", "12", "5"], solution=[FIVE] * 3, relative_error_credit=True)
    assert out == pytest.approx([0.8, 0.0, 1.0])
    assert count(["0", "1"], solution=[{"count": 0}] * 2, relative_error_credit=True) == [1.0, 0.0]


def test_not_applicable_and_metrics():
    out = count(["3", "3", "3 or 4"], solution=[{"label": "x"}, {"count": 3}, {"count": 3}])
    assert out == [None, 1.0, 0.0]
    assert out.metrics["ambiguous"] == 1.0


def test_bad_count_names_the_record():
    with pytest.raises(ValueError, match="record 'n1': solution count must be a non-negative integer"):
        count(["3"], solution=[{"count": 2.5}], id=["n1"])
