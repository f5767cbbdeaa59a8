"""Answer extraction and text normalisation shared by every reward. Nothing here raises on model output.

The answer rule (DESIGN): strip the chat template's tokens (``<|im_end|>``, ``<|endoftext|>``, ...);
if the completion uses ``<answer>`` tags, the answer is the content of the single ``<answer>...</answer>``
block (two blocks, an unclosed or a stray tag is a parse failure); otherwise it is the whole completion
with the reasoning removed. Reasoning is everything inside ``<think>...</think>``, everything before a
lone ``</think>`` (a template that pre-fills ``<think>``) and everything after an unclosed ``<think>``.
Nothing in the reasoning ever counts. An empty answer is a parse failure.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from typing import Any, NamedTuple

# Qwen's special tokens all look like <|name|>; strip every one of them.
TEMPLATE_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_THINK_TAG = re.compile(r"<(/?)think>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_FENCE = re.compile(r"^```[A-Za-z0-9_+-]*\s*\n?(.*?)\n?```$", re.DOTALL)

# Longest text a reward will look at; longer answers are cut (a 1 MB answer is garbage anyway).
MAX_ANSWER_CHARS = 200_000


class Answer(NamedTuple):
    """The answer part of a completion.

    text: the answer (stripped), or None on a parse failure.
    tagged: whether the completion used ``<answer>`` tags.
    failure: "" when parsed, else why not: "multiple_answers", "unclosed_answer", "empty".
    """

    text: str | None
    tagged: bool
    failure: str

    @property
    def ok(self) -> bool:
        return self.text is not None


def strip_template_tokens(text: str) -> str:
    """Remove chat-template tokens (``<|im_end|>``, ``<|endoftext|>``, ``<|vision_start|>``, ...)."""
    return TEMPLATE_TOKEN.sub("", text)


def remove_reasoning(text: str) -> str:
    """``text`` with ``<think>`` blocks, anything before a lone ``</think>`` and after an unclosed
    ``<think>`` removed.

    One pass over the tags, linear in ``len(text)``: a block runs from a ``<think>`` to the first
    ``</think>`` after it (``<think>`` tags inside a block are part of it) and becomes one space.
    """
    kept: list[str] = []
    pos = 0  # start of the text not yet copied
    opened = -1  # start of the open block, or -1
    for m in _THINK_TAG.finditer(text):
        if m.group(1):  # </think>
            if opened >= 0:
                kept += (text[pos:opened], " ")
                opened = -1
            else:  # a lone </think>: what comes before it is reasoning (template pre-filled <think>)
                kept.clear()
            pos = m.end()
        elif opened < 0:
            opened = m.start()
    kept.append(text[pos:opened] if opened >= 0 else text[pos:])  # an unclosed <think>: the rest is reasoning
    return "".join(kept)


def extract_answer(completion: str) -> Answer:
    """Apply the answer rule to one completion string (see the module doc)."""
    if not isinstance(completion, str):
        completion = "" if completion is None else str(completion)
    visible = remove_reasoning(strip_template_tokens(completion))
    # Tags are looked for outside the reasoning: an <answer> inside <think> is still reasoning.
    opens = list(_ANSWER_OPEN.finditer(visible))
    closes = list(_ANSWER_CLOSE.finditer(visible))
    if opens or closes:
        if len(opens) > 1 or len(closes) > 1:
            return Answer(None, True, "multiple_answers")
        if len(opens) != 1 or len(closes) != 1 or closes[0].start() < opens[0].end():
            return Answer(None, True, "unclosed_answer")
        body = visible[opens[0].end() : closes[0].start()].strip()
        return Answer(body[:MAX_ANSWER_CHARS], True, "") if body else Answer(None, True, "empty")
    body = visible.strip()
    return Answer(body[:MAX_ANSWER_CHARS], False, "") if body else Answer(None, False, "empty")


def fast_answer(completion: str) -> str | None:
    """The answer of the common well-formed shapes, exactly as :func:`extract_answer` gives it, or None.

    A fast path for batches: it handles only completions whose every ``<`` opens one of the expected
    lowercase tags, in the order ``[<think>...</think>]<answer>...</answer>``, or that contain no ``<``
    at all, and returns None (not sure: call :func:`extract_answer`) for anything else, including
    failures. Where it returns a string, that string equals ``extract_answer(completion).text``.
    """
    if type(completion) is not str:
        return None
    n = completion.count("<")
    if n == 0:  # no template token, no tag: the answer is the whole (stripped) completion
        body = completion.strip()
    elif n == 2 or n == 4:
        d = completion.find("<answer>")
        e = completion.find("</answer>", d + 8)
        if d < 0 or e < 0:
            return None
        if n == 4:  # the only other two '<' must open <think> ... </think>, before the answer
            a = completion.find("<think>")
            b = completion.find("</think>", a + 7)
            if a < 0 or b < 0 or b + 8 > d:
                return None
        body = completion[d + 8 : e].strip()
    else:
        return None
    return body if body and len(body) <= MAX_ANSWER_CHARS else None


def strip_code_fence(text: str) -> str:
    """The body of a Markdown code fence (```json ... ```) when ``text`` is one, else ``text``."""
    text = text.strip()
    if len(text) < 6 or not (text.startswith("```") and text.endswith("```")):
        return text  # checked first: on a text that cannot match, the regex would backtrack quadratically
    m = _FENCE.match(text)
    return m.group(1).strip() if m else text


def loads_json(text: str) -> tuple[bool, Any]:
    """``(True, value)`` when ``text`` (optionally in a code fence) is JSON, else ``(False, None)``.

    ``NaN`` / ``Infinity`` literals parse to non-finite floats (so a NaN box is one bad box, not an
    unreadable answer); every consumer rejects non-finite numbers. Deep nesting fails; never raises.
    """
    try:
        return True, json.loads(strip_code_fence(text))
    except (ValueError, RecursionError, TypeError):
        return False, None


# ---------------------------------------------------------------------------------------- labels

_ARTICLES = re.compile(r"^(?:a|an|the)\s+(?=\w\w)")  # "a cat" -> "cat", but "a b" stays
_INVISIBLE = re.compile(r"[\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]")
_NOT_WORD = re.compile(r"[^\w\s]|_")  # punctuation and symbols (and underscores) become spaces


def normalize_label(text: str) -> str:
    """Case-, width-, whitespace-, underscore- and punctuation-insensitive form of a label.

    ``"  The Golden_Retriever. "`` -> ``"golden retriever"``; leading articles (a, an, the) dropped.
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    if len(text) <= 64:
        return _normalize_short(text)  # labels repeat: memoised
    return _normalize(text)


@functools.lru_cache(maxsize=65536)
def _normalize_short(text: str) -> str:
    return _normalize(text)


def _normalize(text: str) -> str:
    text = _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).casefold()
    text = " ".join(_NOT_WORD.sub(" ", text).split())
    return _ARTICLES.sub("", text)


def synonym_table(synonyms: dict[str, Any] | None) -> dict[str, str]:
    """``{normalised variant: normalised canonical}`` from ``{canonical: variant | [variants]}``."""
    table: dict[str, str] = {}
    for canonical, variants in (synonyms or {}).items():
        canon = normalize_label(canonical)
        table[canon] = canon
        for v in [variants] if isinstance(variants, str) else list(variants or []):
            table[normalize_label(v)] = canon
    return table


# --------------------------------------------------------------------------------------- numbers

_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![\w])")
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}
_NUMBER_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)


def find_numbers(text: str) -> list[float]:
    """Every decimal number written in ``text`` (``"3"``, ``"-1.5"``, ``"2e3"``), in order."""
    out = []
    for m in _NUMBER.finditer(text):
        try:
            out.append(float(m.group(0)))
        except ValueError:
            continue
    return out


def find_number_words(text: str) -> list[int]:
    """Every English number word from zero to twenty in ``text``, as integers."""
    return [NUMBER_WORDS[m.group(1).lower()] for m in _NUMBER_WORD.finditer(text)]
