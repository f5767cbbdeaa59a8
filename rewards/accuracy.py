"""``accuracy``: normalised exact match of a label answer against ``solution["label"]``.

Applies to records whose solution has a ``label`` (else None). The answer (tag rule of
:mod:`rewards.parsing`) and the label are normalised by :func:`rewards.parsing.normalize_label` (case,
width, whitespace, underscores, hyphens, punctuation, a leading article) and mapped through the
optional ``synonyms`` parameter (``{canonical: [variants]}``). Score 1.0 when they are equal, else 0.0.

- Closed label set: when the solution has ``choices``, an answer that is not one of them scores 0
  (with ``synonyms`` applied to both sides), even if it happens to normalise like the label.
- Hedges and multiple labels ("cat or dog", "cat, dog", "cat/dog") never equal one label: 0.
- Empty answers, unclosed or repeated ``<answer>`` blocks: 0, counted as ``parse_fail``.
- ``solution["answer_format"]``: ``"label"`` (default) compares text. ``"letter"``: the answer is a
  multiple-choice letter for ``choices`` (A = first): ``B``, ``(B)``, ``B.``, ``Option B``, ``B) cat``
  (letter and text must then agree) or the choice text itself. ``"index"``: the answer is the number
  of the choice, 1-based unless the parameter ``index_base`` says otherwise. In both, the correct
  choice is the one equal to ``label``; a label that is itself a letter / number is also accepted.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from rewards.columns import column, completion_text, solutions
from rewards.params import Range, check_arguments
from rewards.parsing import extract_answer, normalize_label, synonym_table
from rewards.registry import register_reward
from rewards.result import MetricCounter, Scores

ANSWER_FORMATS = ("label", "letter", "index")
# One run of spaces per gap (the keyword owns the spaces after it): two adjacent \s* would split a long
# run of spaces every possible way before failing, which is quadratic.
_LETTER = re.compile(
    r"^\(?\s*(?:(?:option|answer|choice)\s*)?\(?([A-Za-z])\s*[).:]?(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL
)
_INDEX = re.compile(
    r"^\(?\s*(?:(?:option|answer|choice)\s*)?\(?(\d{1,4})\s*[).:]?(?:\s+(.*))?$", re.IGNORECASE | re.DOTALL
)


def canonical(text: Any, table: dict[str, str]) -> str:
    """The label ``text`` as compared: normalised (``normalize_label``), then mapped through ``table``."""
    norm = normalize_label(text)
    return table.get(norm, norm)


def choice_position(
    answer: str, choices: list[str], fmt: str, index_base: int, table: dict[str, str]
) -> int | None:
    """0-based choice picked by a letter/index answer (or its text); None if none or ambiguous."""
    canon_choices = [canonical(c, table) for c in choices]
    pattern = _LETTER if fmt == "letter" else _INDEX
    m = pattern.match(answer.strip())
    if m:
        key, rest = m.group(1), m.group(2)
        pos = ord(key.upper()) - ord("A") if fmt == "letter" else int(key) - index_base
        if 0 <= pos < len(choices) and (
            not (rest and rest.strip(" .")) or canonical(rest, table) == canon_choices[pos]
        ):
            return pos
        # "B) dog" when B is "cat" is contradictory; "a dog" may still be the text of a choice
    text = canonical(answer, table)
    hits = [i for i, c in enumerate(canon_choices) if c == text]
    return hits[0] if len(hits) == 1 else None


def _correct_position(
    solution: dict, choices: list[str], fmt: str, index_base: int, table: dict
) -> int | None:
    label = solution.get("label")
    canon_choices = [canonical(c, table) for c in choices]
    canon_label = canonical(label, table)
    if canon_label in canon_choices:
        return canon_choices.index(canon_label)
    s = str(label).strip()
    if fmt == "letter" and len(s) == 1 and s.isalpha():
        return ord(s.upper()) - ord("A")
    if fmt == "index" and s.isdigit():
        return int(s) - index_base
    return None


def score_label(
    answer: str,
    solution: dict[str, Any],
    table: dict[str, str],
    index_base: int = 1,
) -> float:
    """Score one extracted answer against one solution (see module doc); 1.0 or 0.0."""
    fmt = solution.get("answer_format") or "label"
    if fmt not in ANSWER_FORMATS:
        raise ValueError(f"accuracy: solution answer_format must be one of {ANSWER_FORMATS}, got {fmt!r}")
    raw_choices = solution.get("choices") or []
    if not isinstance(raw_choices, (list, tuple)):
        raise ValueError(f"accuracy: solution choices must be a list, got {type(raw_choices).__name__}")
    choices = [c for c in raw_choices if c is not None]
    if fmt != "label" and choices:
        picked = choice_position(answer, choices, fmt, index_base, table)
        correct = _correct_position(solution, choices, fmt, index_base, table)
        return 1.0 if picked is not None and picked == correct else 0.0
    pred = canonical(answer, table)
    if not pred:
        return 0.0
    if choices and pred not in {canonical(c, table) for c in choices}:
        return 0.0
    return 1.0 if pred == canonical(solution.get("label"), table) else 0.0


@register_reward("accuracy")
def accuracy(
    completions: list,
    synonyms: dict[str, str | list[str]] | None = None,
    index_base: Annotated[int, Range(0)] = 1,
    **columns: Any,
) -> Scores:
    """Accuracy: 1.0 when the answer's normalised label equals ``solution["label"]``, else 0.0.

    Closed label sets, hedges and empty answers score 0; letters / indices per
    ``solution["answer_format"]`` (see the module doc).
    """
    check_arguments(accuracy, locals())
    n = len(completions)
    sols = solutions(columns, n)
    table = synonym_table(synonyms)
    counter = MetricCounter("parse_fail")
    out: list[float | None] = []
    ids = column(columns, "id", n)
    for i, (completion, sol) in enumerate(zip(completions, sols)):
        if sol.get("label") is None:
            out.append(None)
            continue
        if (sol.get("answer_format") or "label") not in ANSWER_FORMATS:
            raise ValueError(
                f"accuracy: record {ids[i]!r}: solution answer_format must be one of {ANSWER_FORMATS}, "
                f"got {sol.get('answer_format')!r}"
            )
        if not isinstance(sol.get("choices") or [], (list, tuple)):
            raise ValueError(f"accuracy: record {ids[i]!r}: solution choices must be a list of labels")
        answer = extract_answer(completion_text(completion))
        if not answer.ok:
            counter.add("parse_fail")
            out.append(0.0)
            continue
        out.append(score_label(answer.text, sol, table, index_base))
    return counter.scores(out, columns, "accuracy")


accuracy.check_min_throughput = 500.0  # type: ignore[attr-defined]  # floor for `mmrft rewards check`
