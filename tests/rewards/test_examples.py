"""The worked plugin example (rewards/examples/point_in_box.py): hand-checked scores, both spec forms,
and the hostile battery it must pass like any built-in."""

from pathlib import Path

import pytest

import rewards
from rewards.check import run_checks

SPEC = "rewards.examples.point_in_box:point_in_box"
FILE_SPEC = f"{Path(rewards.__file__).parent / 'examples' / 'point_in_box.py'}:point_in_box"
BOX = {"box": [10, 10, 30, 20]}


@pytest.fixture(scope="module")
def fn():
    return rewards.get(SPEC)


@pytest.mark.parametrize(
    "completion, expected",
    [
        pytest.param('<answer>{"point_2d": [15, 15]}</answer>', 1.0, id="inside_json"),
        pytest.param("[30, 20]", 1.0, id="corner_counts_inside"),
        pytest.param("(5, 15)", 0.0, id="outside"),
        pytest.param("<think>(15, 15)</think><answer>(5, 15)</answer>", 0.0, id="reasoning_never_counts"),
        pytest.param("(15, 15) or (5, 15)", 0.0, id="two_points_hedge"),
        pytest.param("[NaN, 15]", 0.0, id="nan"),
        pytest.param("", 0.0, id="empty"),
    ],
)
def test_cases(fn, completion, expected):
    assert fn([completion], solution=[BOX]) == [expected]


def test_falloff():
    # (5, 15) is 5 px left of the box; its diagonal is sqrt(20^2 + 10^2) = 22.36; falloff 0.5 -> 11.18
    fn = rewards.get(FILE_SPEC)
    assert fn(["(5, 15)"], solution=[BOX], falloff=0.5) == [pytest.approx(1 - 5 / (0.5 * 500**0.5))]


def test_not_applicable(fn):
    assert fn(["(1, 1)"], solution=[{"label": "cat"}]) == [None]


def test_passes_the_battery(fn):
    report = run_checks(fn, SPEC)
    assert report.ok, report.format()
