"""``mmrft rewards new NAME``: write a documented reward plugin and its test from a template."""

from __future__ import annotations

import keyword
import re
from pathlib import Path

PLUGIN_TEMPLATE = '''"""``{name}``: <one line saying what this reward scores; `mmrft rewards list` shows it>.

A reward plugin is a plain function of completion text plus dataset columns. Use it from a config as
``{name}.py:{name}`` (a path spec), or register it for everyone who installs your package with an
entry point in your ``pyproject.toml``::

    [project.entry-points."mmrft.rewards"]
    {name} = "your_package.{name}:{name}"

Contract (see docs/rewards.md):

- ``completions`` are strings or TRL's ``[{{"role": "assistant", "content": str}}]`` lists; every other
  column (``solution``, ``task``, ``coord_space``, ``image_size``, ``id``, ...) is a list with one entry
  per completion and may be missing; unknown columns arrive in ``**columns``.
- Return one float per completion, in [0, 1], or None where the reward does not apply to a record.
  Returning :class:`rewards.result.Scores` adds metrics the trainer logs as ``reward/{name}/<metric>``.
- Read only the answer (:func:`rewards.parsing.extract_answer`), never the reasoning; never raise on
  model output: garbage scores 0; parse in linear time (no regex that can backtrack over the text).
- Parameters: every parameter is a named keyword parameter of the signature with a default; dataset
  columns arrive in ``**columns`` (never read a parameter from there). The config's ``params:`` are
  checked against the signature when the config loads: an unknown name is an error listing the
  accepted ones, and a value its type hint rejects is an error too. Type hints that are checked:
  ``bool``, ``int``, ``float``, ``str``, ``Literal["a", "b"]``, ``X | None``, ``list[X]``,
  ``dict[K, V]`` and ``Annotated[float, Range(0, 1)]`` (``from rewards.params import Range``).

Check it against hostile completions with ``mmrft rewards check {name}.py:{name}``.
"""

from __future__ import annotations

from typing import Annotated, Any

from rewards.columns import completion_text, solutions
from rewards.params import Range
from rewards.parsing import extract_answer, normalize_label
from rewards.result import MetricCounter, Scores


def {name}(
    completions: list,
    case_sensitive: bool = False,
    miss_score: Annotated[float, Range(0, 1)] = 0.0,
    **columns: Any,
) -> Scores:
    """{title}: 1.0 when the answer equals ``solution["answer"]``, else ``miss_score`` (edit to score what
    you need)."""
    n = len(completions)
    sols = solutions(columns, n)
    counter = MetricCounter("parse_fail")
    out: list[float | None] = []
    for completion, sol in zip(completions, sols):
        expected = sol.get("answer")
        if expected is None:
            out.append(None)  # this record is not for this reward
            continue
        answer = extract_answer(completion_text(completion))
        if not answer.ok:
            counter.add("parse_fail")
            out.append(0.0)
            continue
        if case_sensitive:
            hit = answer.text.strip() == str(expected).strip()
        else:
            hit = normalize_label(answer.text) == normalize_label(str(expected))
        out.append(1.0 if hit else miss_score)
    return counter.scores(out)
'''

TEST_TEMPLATE = '''"""Tests for the ``{name}`` reward plugin: hand-checked cases plus the hostile battery."""

from pathlib import Path

import pytest

import rewards
from rewards.check import run_checks

SPEC = f"{{Path(__file__).with_name('{name}.py')}}:{name}"


@pytest.fixture(scope="module")
def fn():
    return rewards.get(SPEC)


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param("<think>no</think><answer>Yes.</answer>", 1.0, id="tagged_normalised"),
        pytest.param("<think>yes</think><answer>no</answer>", 0.0, id="reasoning_never_counts"),
        pytest.param("<answer></answer>", 0.0, id="empty_answer"),
        pytest.param("<answer>yes</answer><answer>no</answer>", 0.0, id="two_answers"),
    ],
)
def test_cases(fn, completion, expected):
    assert fn([completion], solution=[{{"answer": "yes"}}]) == [expected]


def test_not_applicable(fn):
    assert fn(["yes"], solution=[{{"label": "cat"}}]) == [None]


def test_params_are_checked_against_the_signature(fn):
    assert rewards.validate_params(fn, {{"miss_score": 0.1}}) == {{"miss_score": 0.1}}
    assert fn(["no"], solution=[{{"answer": "yes"}}], miss_score=0.1) == [0.1]
    with pytest.raises(ValueError, match="unknown parameter"):
        rewards.validate_params(fn, {{"miss_scroe": 0.1}})
    with pytest.raises(ValueError, match="must be in"):
        rewards.validate_params(fn, {{"miss_score": 2.0}})


def test_hostile_battery(fn):
    report = run_checks(fn, SPEC, min_throughput=10)
    assert report.ok, report.format()
'''

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def write_plugin(name: str, directory: str | Path = ".", overwrite: bool = False) -> list[Path]:
    """Write ``<directory>/<name>.py`` and ``<directory>/test_<name>.py``; returns their paths.

    Raises ``ValueError`` for a name that is not a lowercase Python identifier, or for existing files
    unless ``overwrite``.
    """
    if not _NAME.match(name) or keyword.iskeyword(name):
        raise ValueError(f"reward name {name!r} must be a lowercase Python identifier (letters, digits, _)")
    directory = Path(directory)
    files = {
        directory / f"{name}.py": PLUGIN_TEMPLATE.format(
            name=name, title=name.replace("_", " ").capitalize()
        ),
        directory / f"test_{name}.py": TEST_TEMPLATE.format(name=name),
    }
    existing = [str(p) for p in files if p.exists()]
    if existing and not overwrite:
        raise ValueError(f"refusing to overwrite {', '.join(existing)} (pass --force)")
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
