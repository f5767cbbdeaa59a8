"""Every reward parser runs in linear time on adversarial model output.

Each case times a parser on a text of n repetitions of an adversarial unit and on one of 4n: a linear
parser takes about 4x as long, a quadratic one 16x. The assertion is on that ratio (below 10), never on
absolute times; times are CPU seconds of this process (the least of 3 runs), so other processes on a
loaded machine hardly move them, and a case that looks super-linear is measured once more at twice the
size before it fails. n grows until the shorter run takes a few milliseconds, so timer noise is small.
The units are the ones that made the old parsers quadratic (issue 9: repeated unclosed ``<think>``, 56 KB
in 1.4 s) plus the ones a regex audit of every parser pointed at.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

import rewards
from rewards.accuracy import score_label
from rewards.boxes import parse_boxes
from rewards.chart.reward import code_fences, extract_code
from rewards.counting import parse_count
from rewards.format_reward import answer_only_ok, think_answer_ok
from rewards.parsing import extract_answer, loads_json, normalize_label, strip_code_fence
from rewards.temporal import parse_segment
from rewards.tracking import parse_track

MIN_SECONDS = 0.004  # grow n until the n-run takes at least this long (CPU time)
MAX_CHARS = 1_500_000
RATIO_LIMIT = 10.0  # linear: 4, n log n: ~4.5, quadratic: 16


def _cpu_seconds(fn: Callable[[str], object], text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn(text)
        best = min(best, time.process_time() - t0)
    return best


def growth_ratio(fn: Callable[[str], object], make: Callable[[int], str]) -> tuple[float, int]:
    """(time(4n) / time(n), n) with n grown until time(n) >= MIN_SECONDS."""
    n = 64
    while len(make(n)) * 8 < MAX_CHARS and _cpu_seconds(fn, make(n), 1) < MIN_SECONDS:
        n *= 2
    small = max(_cpu_seconds(fn, make(n)), 1e-6)
    return _cpu_seconds(fn, make(4 * n)) / small, n


def assert_linear(fn: Callable[[str], object], make: Callable[[int], str]) -> None:
    ratio, n = growth_ratio(fn, make)
    if ratio >= RATIO_LIMIT:  # once more, larger: a scheduling hiccup does not repeat, a quadratic does
        ratio, n = growth_ratio(fn, lambda k: make(2 * k))
    assert ratio < RATIO_LIMIT, f"time grows {ratio:.1f}x for 4x the input (n={n}, {len(make(n))} chars)"


def _rep(unit: str, prefix: str = "", suffix: str = "") -> Callable[[int], str]:
    return lambda n: prefix + unit * n + suffix


LETTER = {"label": "cat", "choices": ["cat", "dog"], "answer_format": "letter"}
INDEX = {"label": "cat", "choices": ["cat", "dog"], "answer_format": "index"}

# (parser name, parser, adversarial text builder)
CASES = [
    ("extract_answer", extract_answer, _rep("<think>")),  # issue 9: 56 KB took 1.4 s, 242 KB 26 s
    ("extract_answer", extract_answer, _rep("<think>a")),
    ("extract_answer", extract_answer, _rep("<think><answer>")),
    ("extract_answer", extract_answer, _rep("</think>")),
    ("extract_answer", extract_answer, _rep("<answer>")),
    ("extract_answer", extract_answer, _rep("<|a")),
    ("strip_code_fence", strip_code_fence, _rep("a", "```")),  # language-word backtracking
    ("strip_code_fence", strip_code_fence, _rep(" ", "```", "x")),
    ("strip_code_fence", strip_code_fence, _rep("```")),
    ("loads_json", loads_json, _rep("[", "```json\n")),
    ("normalize_label", normalize_label, _rep("the a \u200b")),
    ("code_fences", code_fences, _rep("```")),  # each triple used to rescan the line
    ("code_fences", code_fences, _rep("```python ")),
    ("code_fences", code_fences, _rep("```\n")),
    ("extract_code", extract_code, _rep("``` ", "<answer>", "</answer>")),
    ("think_answer_ok", think_answer_ok, _rep("</think><answer>", "<think>")),  # lazy groups, many closes
    ("think_answer_ok", think_answer_ok, _rep("</think><answer></answer>", "<think>")),
    ("answer_only_ok", answer_only_ok, _rep("</answer> ", "<answer>")),
    ("parse_boxes", parse_boxes, _rep("[1,")),
    ("parse_boxes", parse_boxes, _rep("[[1,")),
    ("parse_boxes", parse_boxes, _rep("{1")),
    ("parse_boxes", parse_boxes, _rep("(1,2) ")),
    ("parse_boxes", parse_boxes, _rep(" ", "(1,2)", "x")),
    ("parse_boxes", parse_boxes, _rep("1", "[")),
    ("parse_boxes", parse_boxes, _rep('{"bbox_2d": [1, 2, 3, 4]}, ', "[")),
    ("parse_count", parse_count, _rep("1 - ")),
    ("parse_count", parse_count, _rep("1", "", "x")),
    ("parse_count", parse_count, _rep("three, ")),
    ("score_label/letter", lambda t: score_label(t, LETTER, {}), _rep(" ", "(", "!")),
    ("score_label/letter", lambda t: score_label(t, LETTER, {}), _rep("B) ")),
    ("score_label/index", lambda t: score_label(t, INDEX, {}), _rep(" ", "option", "!")),
    ("parse_segment", parse_segment, _rep("1:")),
    ("parse_segment", parse_segment, _rep("1:1.")),
    ("parse_segment", parse_segment, _rep("1-")),
    ("parse_segment", parse_segment, _rep("1", "", "x")),
    ("parse_track", lambda t: parse_track(t, (100, 100)), _rep("[1,2,3,4] ")),
    ("parse_track", lambda t: parse_track(t, (100, 100)), _rep('{"frame": 1')),
]


@pytest.mark.parametrize("name, fn, make", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_parser_is_linear_on_adversarial_text(name, fn, make):
    assert_linear(fn, make)


@pytest.mark.parametrize("name", [n for n in rewards.available() if n != "chart_render"])
def test_each_reward_scores_repeated_unclosed_think_tags_in_linear_time(name):
    fn, rec = rewards.get(name), {"solution": {"label": "cat", "count": 3, "box": [1, 1, 9, 9],
                                               "boxes": [[1, 1, 9, 9]], "labels": ["cat"], "segment": [0, 1]}}  # fmt: skip
    assert_linear(lambda t: fn([t], solution=[rec["solution"]]), _rep("<think>1 ", "<answer>3</answer>"))


def test_the_ratio_test_catches_a_quadratic_parser():
    def quadratic(text: str) -> int:  # what the old remove_reasoning did: rescan the rest per tag
        return sum(text.find("</think>", k) for k in range(0, len(text), 7))

    ratio, _ = growth_ratio(quadratic, _rep("<think>"))
    assert ratio > RATIO_LIMIT
