"""``counting``: an integer answer against ``solution["count"]``.

Applies to records whose solution has a ``count`` (else None). The answer (tag rule of
:mod:`rewards.parsing`; a number in the reasoning never counts) must state exactly one count:

- digits (``"3"``, ``"3."``, ``"There are 3 dogs."``, ``"3.0"``), an English number word from zero to
  twenty (``"three"``), or JSON ``{"count": 3}``;
- several different numbers ("3 or 4", "between 3 and 5"), a non-integer ("3.5"), a negative
  number, or no number at all: 0, counted as ``ambiguous`` / ``parse_fail``.

Score: 1.0 on an exact match, else 0.0. With ``relative_error_credit=True`` a near miss earns
``max(0, 1 - |pred - gt| / max(gt, 1))`` (so 4 for 5 scores 0.8, 0 for 0 scores 1, 1 for 0 scores 0).
"""

from __future__ import annotations

import math
from typing import Any

from rewards.columns import column, completion_text, solutions
from rewards.params import check_arguments
from rewards.parsing import extract_answer, find_number_words, find_numbers, loads_json
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores

MAX_COUNT = 10**12  # larger stated counts are not counts (and 1e308 would not convert exactly)


class CountParse:
    """Outcome of reading a count: ``value`` (an int) or ``failure`` ("parse_fail" / "ambiguous")."""

    __slots__ = ("value", "failure")

    def __init__(self, value: int | None, failure: str = ""):
        self.value, self.failure = value, failure


def parse_count(answer: str | None) -> CountParse:
    """The single non-negative integer an answer states (see module doc). Never raises."""
    if answer is None:
        return CountParse(None, "parse_fail")
    ok, value = loads_json(answer)
    if ok and isinstance(value, dict):
        value = value.get("count", value.get("answer"))
    if ok and isinstance(value, (int, float)) and not isinstance(value, bool):
        numbers = [value]  # a JSON integer stays exact: float() overflows past 1e308
    else:
        numbers = find_numbers(answer) + [float(w) for w in find_number_words(answer)]
    distinct = sorted(set(numbers))
    if not distinct:
        return CountParse(None, "parse_fail")
    if len(distinct) > 1:
        return CountParse(None, "ambiguous")
    x = distinct[0]
    if not 0 <= x <= MAX_COUNT:  # compared exactly, so a 400-digit integer and NaN land here too
        return CountParse(None, "ambiguous")
    if isinstance(x, float) and x != int(x):
        return CountParse(None, "ambiguous")
    return CountParse(int(x))


@register_reward("counting")
def counting(completions: list, relative_error_credit: bool = False, **columns: Any) -> Scores:
    """Counting: 1.0 when the answer states exactly ``solution["count"]`` (near-miss credit optional)."""
    check_arguments(counting, locals())
    n = len(completions)
    sols = solutions(columns, n)
    counter = MetricCounter("parse_fail", "ambiguous")
    out: list[float | None] = []
    ids = column(columns, "id", n)
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        gt = sol.get("count")
        if gt is None:
            out.append(None)
            continue
        if (
            isinstance(gt, bool)
            or not isinstance(gt, (int, float))
            or (isinstance(gt, float) and not (math.isfinite(gt) and gt == int(gt)))
            or gt < 0
        ):
            raise ValueError(
                f"counting: record {ids[i]!r}: solution count must be a non-negative integer, got {gt!r}"
            )
        gt = int(gt)
        answer = extract_answer(completion_text(completion))
        parsed = parse_count(answer.text)
        if parsed.value is None:
            counter.add(parsed.failure)
            out.append(0.0)
        elif relative_error_credit:
            out.append(max(0.0, 1.0 - abs(parsed.value - gt) / max(gt, 1)))
        else:
            out.append(1.0 if parsed.value == gt else 0.0)
    return counter.scores(out, columns, "counting")


counting.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
