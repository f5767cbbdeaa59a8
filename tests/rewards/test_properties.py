"""Property-based tests (hypothesis): every reward parser and every built-in reward, on arbitrary model
output, returns a value in its range and never raises; reward parameters give a value or a clean
``ValueError``. Plus the regressions of issue 9 (counting overflow, accuracy index errors)."""

from __future__ import annotations

import json
import math
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rewards
from rewards.accuracy import score_label
from rewards.boxes import INVALID, Box, fast_parse, parse_boxes
from rewards.chart.reward import code_fences, extract_code
from rewards.check import records
from rewards.columns import completion_text, frame_size, solutions
from rewards.counting import MAX_COUNT, parse_count
from rewards.format_reward import JSON_SHAPES, answer_only_ok, json_shape_ok, think_answer_ok
from rewards.params import ParamError, check_value, declared
from rewards.parsing import (
    MAX_ANSWER_CHARS,
    extract_answer,
    fast_answer,
    find_number_words,
    find_numbers,
    loads_json,
    normalize_label,
    remove_reasoning,
    strip_code_fence,
)
from rewards.temporal import parse_segment, parse_times
from rewards.tracking import parse_track

# Example counts keep the file at about 25 s on a quiet 2-core machine; raise them locally to dig deeper.
PROFILE = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REWARD_PROFILE = settings(PROFILE, max_examples=40)

# Pieces a model (or an attacker) writes: tags in every case, template tokens, fences, JSON fragments,
# numbers past float range, Unicode that case-folds or normalises strangely, control characters.
TOKENS = [
    "<think>", "</think>", "<answer>", "</answer>", "<THINK>", "</Answer>", "<think", "answer>", "<|im_end|>",
    "<|endoftext|>", "<|", "|>", "```", "```python\n", "```json\n", "\n", " ", "\t", "[", "]", "{", "}", "(",
    ")", ",", ":", ".", "-", "+", "e", "E", "'", '"', '"bbox_2d": ', '"label": ', '"score": ', '"count": ',
    '"start": ', '"end": ', '"frame": ', '"boxes": ', "null", "NaN", "Infinity", "-Infinity", "true", "0",
    "1", "3", "12.5", "9" * 309, "1" * 401, "1e400", "-5", "0.5", "1:02", "1:00:01.5", "12.5s", "seconds",
    "three", "twenty", "none", "no objects", "A", "B", "B)", "Z) cat", "(B)", "Option", "5 x", "cat", "dog",
    "a ", "the ", "\u200b", "\u202e", "\u212a", "\u017f", "\u0663", "\x00", "\ufeff", "\U0001f415", "\\",
]  # fmt: skip
pieces = st.one_of(st.sampled_from(TOKENS), st.text(max_size=4))
hostile_text = st.one_of(st.text(max_size=80), st.lists(pieces, max_size=32).map("".join))

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63, 0, 1, 3]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
)
KEYS = ["bbox_2d", "bbox", "box", "label", "score", "count", "answer", "start", "end", "frame", "boxes"]
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=6),
        st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5),
    ),
    max_leaves=12,
)
json_text = json_values.map(lambda v: json.dumps(v))  # NaN and Infinity as Python writes them
wrapped = st.tuples(st.sampled_from(["{}", "<answer>{}</answer>", "<think>x</think><answer>{}</answer>",
                                     "<answer>```json\n{}\n```</answer>", "{} and more"]),
                    json_text).map(lambda t: t[0].format(t[1]))  # fmt: skip
answers = st.one_of(hostile_text, json_text, wrapped)
completions = st.one_of(
    answers,
    answers.map(lambda a: [{"role": "assistant", "content": a}]),
    answers.map(lambda a: [{"role": "assistant", "content": [{"type": "text", "text": a}]}]),
    st.none(),
    st.integers(),
    st.binary(max_size=16),
)
frames = st.one_of(st.none(), st.tuples(st.floats(1, 2000), st.floats(1, 2000)))


def _in_range(s) -> bool:
    return s is None or (type(s) is float and math.isfinite(s) and 0.0 <= s <= 1.0)


# ----------------------------------------------------------------------------------- answer rule


@PROFILE
@given(completions)
def test_extract_answer_is_total_and_consistent(c):
    a = extract_answer(completion_text(c))
    assert (a.text is None) == bool(a.failure) and a.failure in (
        "",
        "multiple_answers",
        "unclosed_answer",
        "empty",
    )
    if a.text is not None:
        assert a.text == a.text.strip() and 0 < len(a.text) <= MAX_ANSWER_CHARS
        if a.tagged:
            assert not re.search("</?answer>", a.text, re.IGNORECASE)


@PROFILE
@given(hostile_text, hostile_text)
def test_nothing_inside_a_closed_think_block_is_ever_the_answer(before, after):
    before, after = (re.sub("(?i)<(/?)think>", "", t) for t in (before, after))
    text = extract_answer(f"{before}<think>SECRET-7f3</think>{after}").text or ""
    assert "SECRET-7f3" not in text


@PROFILE
@given(hostile_text)
def test_remove_reasoning_leaves_no_think_tag(text):
    assert not re.search("<(/?)think>", remove_reasoning(text), re.IGNORECASE)


@PROFILE
@given(answers)
def test_fast_answer_agrees_with_extract_answer_whenever_it_answers(text):
    fast = fast_answer(text)
    assert fast is None or fast == extract_answer(text).text


@PROFILE
@given(answers)
def test_text_helpers_never_raise(text):
    ok, _ = loads_json(text)
    assert isinstance(ok, bool)
    assert isinstance(strip_code_fence(text), str) and isinstance(normalize_label(text), str)
    assert all(isinstance(x, float) for x in find_numbers(text))
    assert all(0 <= x <= 20 for x in find_number_words(text))


@PROFILE
@given(st.one_of(json_values, st.lists(json_values), hostile_text), st.integers(0, 5))
def test_columns_helpers_never_raise(value, n):
    sols = solutions({"solution": value}, n)
    assert len(sols) == n and all(isinstance(s, dict) for s in sols)
    size = frame_size("pixel", value)
    assert size is None or all(math.isfinite(v) and v > 0 for v in size)
    assert isinstance(completion_text(value), str)


# --------------------------------------------------------------------------------- task parsers


@PROFILE
@given(answers, frames, st.integers(1, 20))
def test_parse_boxes_gives_clean_boxes_or_a_failure(text, frame, max_boxes):
    parsed = parse_boxes(text, frame, max_boxes)
    if not parsed.ok:
        assert parsed.boxes == [] and parsed.failure
        return
    assert len(parsed.boxes) <= max_boxes and parsed.invalid == sum(not b.valid for b in parsed.boxes)
    for b in parsed.boxes:
        assert isinstance(b, Box)
        if b.valid:
            assert all(math.isfinite(v) for v in b[:4]) and 0 <= b.x1 <= b.x2 and 0 <= b.y1 <= b.y2
            assert frame is None or (b.x2 <= frame[0] and b.y2 <= frame[1])
            assert b.score is None or 0.0 <= b.score <= 1.0
        else:
            assert b == INVALID
    fast = fast_parse([text])
    assert len(fast.counts) == 1


@PROFILE
@given(answers)
def test_parse_count_is_a_non_negative_integer_or_a_failure(text):
    parsed = parse_count(text)
    if parsed.value is None:
        assert parsed.failure in ("parse_fail", "ambiguous")
    else:
        assert type(parsed.value) is int and 0 <= parsed.value <= MAX_COUNT and parsed.failure == ""


@PROFILE
@given(
    answers,
    st.lists(st.sampled_from(["cat", "dog", "A", "3", "golden retriever"]), min_size=0, max_size=4),
    st.sampled_from([None, "label", "letter", "index"]),
    st.sampled_from(["cat", "dog", "A", "3", "B"]),
    st.integers(0, 2),
)
def test_score_label_is_zero_or_one(text, choices, fmt, label, base):
    sol = {"label": label, "choices": choices, "answer_format": fmt}
    assert score_label(text, sol, {}, base) in (0.0, 1.0)


@PROFILE
@given(answers)
def test_parse_segment_and_times(text):
    seg, failure = parse_segment(text)
    if seg is None:
        assert failure in ("parse_fail", "ambiguous")
    else:
        assert math.isfinite(seg[0]) and math.isfinite(seg[1]) and seg[0] <= seg[1]
    assert all(isinstance(t, float) and t >= 0 for t in parse_times(text))


@PROFILE
@given(answers, frames, st.integers(1, 30))
def test_parse_track_is_per_frame_boxes_or_a_failure(text, frame, max_frames):
    track = parse_track(text, frame, max_frames)
    if track is not None:
        assert len(track) <= max_frames
        for b in track:
            assert b is None or (isinstance(b, Box) and (not b.valid or all(math.isfinite(v) for v in b[:4])))


@PROFILE
@given(answers, json_values)
def test_format_checks_are_booleans(text, value):
    assert isinstance(think_answer_ok(text), bool) and isinstance(think_answer_ok(text, True), bool)
    assert isinstance(answer_only_ok(text), bool)
    for shape in JSON_SHAPES[1:]:
        assert isinstance(json_shape_ok(value, shape), bool)


@PROFILE
@given(completions, st.sampled_from(["auto", "fence", "whole"]))
def test_extract_code_and_code_fences(c, mode):
    code = extract_code(c, mode)
    assert code is None or (isinstance(code, str) and code)
    text = completion_text(c)
    for lang, body in code_fences(text):
        assert body in text and re.fullmatch(r"[A-Za-z0-9_+-]*", lang)


# ------------------------------------------------------------------------------ the rewards


RECORDS = records()
BUILTINS = [name for name in rewards.available() if name != "chart_render"]  # chart: its parser above


@pytest.mark.parametrize("name", BUILTINS)
def test_every_builtin_scores_arbitrary_output_in_range(name):
    fn = rewards.get(name)

    @REWARD_PROFILE
    @given(st.lists(st.tuples(completions, st.integers(0, len(RECORDS) - 1)), min_size=1, max_size=6))
    def check(batch):
        recs = [RECORDS[k] for _, k in batch]
        cols = {
            key: [r[key] for r in recs] for key in ("solution", "task", "coord_space", "image_size", "id")
        }
        scores = fn(completions=[c for c, _ in batch], **cols)
        assert len(scores) == len(batch) and all(_in_range(s) for s in scores), scores
        assert all(math.isfinite(v) for v in getattr(scores, "metrics", {}).values())

    check()


@REWARD_PROFILE
@given(st.lists(completions, min_size=1, max_size=4))
def test_the_worked_example_plugin_scores_arbitrary_output_in_range(batch):
    from rewards.examples.point_in_box import parse_point, point_in_box

    scores = point_in_box(batch, falloff=0.5, solution=[{"box": [1, 2, 30, 40]}] * len(batch))
    assert len(scores) == len(batch) and all(s is not None and _in_range(s) for s in scores)
    for c in batch:
        p = parse_point(extract_answer(completion_text(c)).text)
        assert p is None or all(math.isfinite(v) for v in p)


# ------------------------------------------------------------------------- reward parameters


@st.composite
def reward_params(draw):
    name = draw(st.sampled_from(list(rewards.available())))
    names = list(declared(rewards.get(name)).params) + ["treshold", "solution", "x"]
    return name, draw(st.dictionaries(st.sampled_from(names), json_values, max_size=3))


@settings(PROFILE, max_examples=100)
@given(reward_params())
def test_parameters_give_a_value_or_a_clean_error(case):
    name, params = case
    fn = rewards.get(name)
    try:
        out = rewards.validate_params(fn, params, "rewards[0].params")
    except ParamError as e:
        assert str(e).startswith("rewards[0].params") and "\n" not in str(e)
    else:
        assert out == params
        for key, (_, tp) in declared(fn).params.items():
            if key in params:
                assert check_value(params[key], tp) is None


# --------------------------------------------------------------------- issue 9 regressions


@pytest.mark.parametrize(
    "answer", ["9" * 309, "1" * 401, "<answer>" + "9" * 309 + "</answer>", '{"count": 1e999}']
)
def test_counting_survives_numbers_past_float_range(answer):
    fn = rewards.get("counting")
    out = fn([answer], solution=[{"count": 3}])  # OverflowError: int too large to convert to float
    assert list(out) == [0.0] and out.metrics["ambiguous"] == 1.0


@pytest.mark.parametrize(
    "fmt, answer, label, expected",
    [
        ("index", "5 x", "cat", 0.0),  # IndexError: index 5 of 2 choices, then text compared
        ("letter", "Z) cat", "cat", 0.0),  # IndexError: letter Z of 2 choices
        ("letter", "B) dog", "dog", 1.0),
        ("index", "2 dog", "dog", 1.0),
        ("letter", "\u212a", "cat", 0.0),  # the Kelvin sign matches [A-Za-z] under IGNORECASE
    ],
)
def test_accuracy_choice_out_of_range_scores_zero(fmt, answer, label, expected):
    sol = {"label": label, "choices": ["cat", "dog"], "answer_format": fmt}
    assert list(rewards.get("accuracy")([answer], solution=[sol])) == [expected]


def test_temporal_times_past_float_range_do_not_overflow():
    # int("1" * 400) * 60 used to raise OverflowError when added to a float; 5000 digits hit int's limit
    for answer in ["1" * 400 + ":00 to 2", "1" * 5000 + ":00 to 2", "[" + "9" * 400 + ", 5]"]:
        assert rewards.get("temporal_iou")([answer], solution=[{"segment": [0, 5]}])[0] == 0.0


def test_the_worked_example_survives_a_point_past_float_range():
    from rewards.examples.point_in_box import point_in_box

    answer = "[" + "9" * 400 + ", 3]"  # float() of the parsed int used to raise OverflowError
    assert list(point_in_box([answer], solution=[{"box": [1, 2, 3, 4]}])) == [0.0]


@pytest.mark.parametrize("box", [[1, 2, 10**400, 4], [float("nan"), 1, 2, 3], ["a", 1, 2, 3]])
def test_broken_ground_truth_boxes_are_one_line_errors_naming_the_record(box):
    for name, sol in (("detection", {"boxes": [box], "labels": ["a"]}), ("iou", {"box": box})):
        with pytest.raises(ValueError, match=rf"^{name}: record 'r1': solution box") as e:
            rewards.get(name)(["[]"], solution=[sol], id=["r1"])  # 10**400 was an OverflowError in detection
        assert "\n" not in str(e.value)


@pytest.mark.parametrize(
    "name, sol, task",
    [
        ("tracking", {"boxes": 3}, "tracking"),
        ("detection", {"boxes": 3, "labels": ["a"]}, "detection"),
        ("detection", {"boxes": [[1, 2, 3, 4]], "labels": 5}, "detection"),
        ("accuracy", {"label": "a", "choices": 5}, None),
    ],
)
def test_ground_truth_of_the_wrong_type_is_a_one_line_error_naming_the_record(name, sol, task):
    with pytest.raises(ValueError, match=rf"^{name}: record 'r9': solution "):  # were TypeErrors
        rewards.get(name)(["x"], solution=[sol], task=[task], id=["r9"])
