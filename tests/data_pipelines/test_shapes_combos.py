"""Shape/colour pair splits for the shifted evaluation: seen splits never draw an unseen pair, the
unseen split asks only about them, and a split without the option is unchanged."""

import json

import pytest

from data_pipelines.synthetic import write_shapes_dataset
from data_pipelines.synthetic.shapes import is_unseen_pair

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow", "purple", "orange")


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_unseen_pairs_are_a_third_and_cover_every_shape_and_colour():
    unseen = {(s, c) for s in SHAPES for c in COLORS if is_unseen_pair(s, c, SHAPES, COLORS)}
    # (shape index + colour index) % 3 == 0, worked out by hand
    assert unseen == {
        ("circle", "red"), ("circle", "yellow"), ("square", "blue"),
        ("square", "orange"), ("triangle", "green"), ("triangle", "purple"),
    }  # fmt: skip
    assert {s for s, _ in unseen} == set(SHAPES) and {c for _, c in unseen} == set(COLORS)


@pytest.mark.parametrize("task", ["classification", "counting", "grounding", "detection"])
def test_seen_split_draws_no_unseen_pair(tmp_path, task):
    path = write_shapes_dataset(tmp_path, task=task, n=40, seed=0, combos="seen", distractors=3)
    objects = [o for r in _records(path) for o in r["meta"]["objects"]]
    assert len(objects) >= 40
    assert not any(is_unseen_pair(o["shape"], o["color"], SHAPES, COLORS) for o in objects)


def test_unseen_split_asks_about_unseen_pairs_only(tmp_path):
    path = write_shapes_dataset(tmp_path, task="grounding", n=40, seed=2, combos="unseen", distractors=4)
    n_distractors = 0
    for r in _records(path):
        (target,) = [o for o in r["meta"]["objects"] if o["box"] == r["solution"]["box"]]
        assert is_unseen_pair(target["shape"], target["color"], SHAPES, COLORS)
        assert f"Find the {target['color']} {target['shape']}" in r["prompt"][0]["content"][1]["text"]
        n_distractors += len(r["meta"]["objects"]) - 1
    assert n_distractors > 40  # up to 4 distractors per image, in any pair
    cls = write_shapes_dataset(tmp_path / "c", task="classification", n=30, combos="unseen", question="color")
    for r in _records(cls):
        (o,) = r["meta"]["objects"]
        assert is_unseen_pair(o["shape"], o["color"], SHAPES, COLORS) and r["solution"]["label"] == o["color"]


def test_all_pairs_split_is_byte_identical_to_the_default(tmp_path):
    for task in ("classification", "grounding", "detection"):
        a = write_shapes_dataset(tmp_path / "a", task=task, n=6, seed=4)
        b = write_shapes_dataset(tmp_path / "b", task=task, n=6, seed=4, combos="all")
        assert a.read_bytes() == b.read_bytes()


def test_bad_combos_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="combos must be one of"):
        write_shapes_dataset(tmp_path, n=1, combos="some")
    with pytest.raises(ValueError, match="needs every shape in a seen and an unseen pair"):
        write_shapes_dataset(tmp_path, n=1, combos="seen", colors=("red",))
