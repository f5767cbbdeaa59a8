"""The seeded synthetic shapes tasks: determinism, prompts, ground truth that matches the pixels."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines.dataset import JsonlDataset
from data_pipelines.synthetic import write_shapes_dataset
from data_pipelines.synthetic.draw import COLORS, SHAPES, draw_shape
from data_pipelines.vision import VisionSpec


def _tree_digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_gives_byte_identical_files(tmp_path):
    for d in ("a", "b"):
        write_shapes_dataset(tmp_path / d, "grounding", n=20, seed=3, background="noise")
    a, b = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert len(a) == 21 and a == b  # 20 PNGs + 1 JSONL


def test_splits_and_seeds_differ_and_prefix_is_stable(tmp_path):
    train = _records(write_shapes_dataset(tmp_path / "t", "classification", n=30, split="train"))
    test = _records(write_shapes_dataset(tmp_path / "t", "classification", n=30, split="test"))
    short = _records(write_shapes_dataset(tmp_path / "s", "classification", n=5, split="train"))
    assert [r["meta"]["objects"] for r in train] != [r["meta"]["objects"] for r in test]
    assert [r["meta"] for r in short] == [r["meta"] for r in train[:5]]


@pytest.mark.parametrize("shape", SHAPES)
def test_drawn_pixels_fill_exactly_the_box(shape):
    image = Image.new("RGB", (64, 64), (255, 255, 255))
    box = draw_shape(image, shape, "blue", 10, 20, 30)
    assert box == [10, 20, 40, 50]
    ys, xs = np.nonzero(np.asarray(image).min(axis=2) < 255)
    assert [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] == box


def test_classification_prompt_and_solution(tmp_path):
    recs = _records(write_shapes_dataset(tmp_path, "classification", n=40))
    text = recs[0]["prompt"][0]["content"][1]["text"]
    assert text == (
        "What shape is in the image? Choose from: circle, square, triangle. Answer with <answer>shape</answer>."
    )
    assert recs[0]["prompt"][0]["content"][0] == {"type": "image"}
    labels = {r["solution"]["label"] for r in recs}
    assert labels == {"circle", "square", "triangle"}
    for r in recs:
        assert r["solution"]["choices"] == ["circle", "square", "triangle"]
        assert [o["shape"] for o in r["meta"]["objects"]] == [r["solution"]["label"]]
    plain = _records(write_shapes_dataset(tmp_path / "p", "detection", n=1, prompt_style="plain"))
    assert plain[0]["prompt"][0]["content"][1]["text"].endswith("only. If there is none, answer [].")
    think = _records(write_shapes_dataset(tmp_path, "classification", n=1, prompt_style="think_answer"))
    assert think[0]["prompt"][0]["content"][1]["text"].endswith(
        "Think in <think></think>, then answer in <answer></answer> as <answer>shape</answer>."
    )


def test_counting_and_detection_solutions_match_drawn_objects(tmp_path):
    for r in _records(write_shapes_dataset(tmp_path, "counting", n=40, distractors=2)):
        target = r["prompt"][0]["content"][1]["text"].split("How many ")[1].split("s are")[0]
        assert r["solution"]["count"] == sum(o["shape"] == target for o in r["meta"]["objects"])
        assert 1 <= r["solution"]["count"] <= 5
    dets = _records(write_shapes_dataset(tmp_path, "detection", n=60, empty_frac=0.3))
    empty = [r for r in dets if not r["solution"]["boxes"]]
    assert 5 <= len(empty) <= 35 and all(r["meta"]["objects"] for r in empty)  # distractors only
    assert "If there is none, answer <answer>[]</answer>." in dets[0]["prompt"][0]["content"][1]["text"]


def test_grounding_prompt_names_the_target(tmp_path):
    for r in _records(write_shapes_dataset(tmp_path, "grounding", n=30, distractors=3)):
        text = r["prompt"][0]["content"][1]["text"]
        hits = [o for o in r["meta"]["objects"] if f"Find the {o['color']} {o['shape']} " in text]
        assert len(hits) == 1 and hits[0]["box"] == r["solution"]["box"]
        assert text.endswith('Answer with <answer>{"bbox_2d": [x1, y1, x2, y2]}</answer>.')


def test_model_frame_box_lands_on_the_shape_in_the_resized_image(tmp_path):
    # 150 px images under max_pixels 120*120: 150 / 1.25 = 120 -> floor to 4*28 = 112, sx = sy = 0.7467.
    path = write_shapes_dataset(tmp_path, "grounding", n=12, image_size=150, distractors=0)
    ds = JsonlDataset(path, vision=VisionSpec(max_pixels=120 * 120))
    for i in range(len(ds)):
        s = ds[i]
        assert s.images[0].size == (112, 112) and s.scales == [(112 / 150, 112 / 150)]
        arr = np.asarray(s.images[0]).astype(int)
        color = np.array(COLORS[s.columns["meta"]["objects"][0]["color"]])
        on = np.abs(arr - color).sum(axis=2) < 60  # pixels of the shape's colour after bicubic resizing
        ys, xs = np.nonzero(on)
        x1, y1, x2, y2 = s.solution["box"]
        # every pixel of the shape's colour lies inside the model-frame box (1 px of resampling blur) ...
        assert x1 - 1 <= xs.min() and xs.max() + 1 <= x2 + 1 and y1 - 1 <= ys.min() and ys.max() + 1 <= y2 + 1
        # ... and fills it: the coloured pixels' tight box overlaps it with IoU > 0.85 (a 1.5 px miss
        # on one side of a 30 px box is IoU 0.95; a box left in original pixels would be < 0.6).
        tx1, ty1, tx2, ty2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        inter = (min(x2, tx2) - max(x1, tx1)) * (min(y2, ty2) - max(y1, ty1))
        union = (x2 - x1) * (y2 - y1) + (tx2 - tx1) * (ty2 - ty1) - inter
        assert inter / union > 0.85


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        write_shapes_dataset(tmp_path, "segmentation", n=1)
    with pytest.raises(ValueError, match="hexagonal"):
        write_shapes_dataset(tmp_path, "classification", n=1, shapes=("circle", "hexagonal"))
    with pytest.raises(ValueError, match=r"cannot place \d shapes of side >= 50 px"):
        write_shapes_dataset(tmp_path, "counting", n=20, min_size_frac=0.45, max_size_frac=0.5)
