"""JsonlDataset: lazy loading, frames and scales, multi-image and mixed tasks, datasets input."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from data_pipelines import dataset as dataset_mod
from data_pipelines.dataset import JsonlDataset, RecordDataset
from data_pipelines.vision import VisionSpec


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _image(path, size, color=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def _msg(n_images=1, text="Find the dog."):
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": text}]}]


@pytest.fixture
def mixed(tmp_path):
    _image(tmp_path / "img" / "wide.png", (1000, 500))  # W x H
    _image(tmp_path / "img" / "small.png", (112, 112))
    recs = [
        {"id": "g1", "task": "grounding", "images": ["img/wide.png"], "prompt": _msg(),
         "solution": {"box": [100, 50, 300, 250]}},
        {"id": "c1", "task": "classification", "images": ["img/small.png"], "prompt": "Which shape?",
         "solution": {"label": "circle", "choices": ["circle", "square"]}, "difficulty": 0.5},
        {"id": "d1", "task": "detection", "images": ["img/wide.png", "img/small.png"], "prompt": _msg(2),
         "solution": {"boxes": [[0, 0, 1000, 500]], "labels": ["sky"]}, "coord_space": "norm1000"},
        {"id": "n1", "task": "counting", "images": [], "prompt": [{"role": "user", "content": "How many?"}],
         "solution": {"count": 3}},
    ]  # fmt: skip
    return _write(tmp_path / "data.jsonl", recs)


def test_construction_opens_no_image(mixed, monkeypatch):
    opened = []
    real_open = dataset_mod.Image.open
    monkeypatch.setattr(
        dataset_mod.Image, "open", lambda p, *a, **k: opened.append(p) or real_open(p, *a, **k)
    )
    ds = JsonlDataset(mixed, vision=VisionSpec(max_pixels=256 * 28 * 28))
    assert len(ds) == 4 and opened == []
    ds[1]
    assert [str(p) for p in opened] == [str(mixed.parent / "img" / "small.png")]


def test_sample_frames_scales_and_original(mixed):
    # 1000x500 under 256*28*28 = 200,704 px: round gives 1008x504 > budget; beta = sqrt(500000/200704)
    # = 1.5784 -> 633.6 -> 22*28 = 616 wide, 316.8 -> 11*28 = 308 high. sx = 0.616, sy = 0.616.
    ds = JsonlDataset(mixed, vision=VisionSpec(max_pixels=256 * 28 * 28))
    g = ds[0]
    assert g.images[0].size == (616, 308) and g.image_sizes == [(616, 308)]
    assert g.scales == [(0.616, 0.616)] and g.original_sizes == [(1000, 500)]
    assert g.solution["box"] == pytest.approx([61.6, 30.8, 184.8, 154.0])
    assert g.solution_original == {"box": [100, 50, 300, 250]}
    assert g.to_original(g.solution)["box"] == pytest.approx([100, 50, 300, 250])
    assert g.prompt == _msg() and g.coord_space == "pixel"


def test_string_prompt_extra_columns_multi_image_and_norm1000(mixed):
    ds = JsonlDataset(mixed)
    c = ds[1]
    assert c.prompt == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which shape?"}]}
    ]
    assert c.columns == {"difficulty": 0.5} and c.scales == [(1.0, 1.0)]
    d = ds[2]
    assert len(d.images) == 2 and d.coord_space == "norm1000"
    assert d.solution["boxes"] == [[0.0, 0.0, 1000.0, 1000.0]]  # the whole image is 0..1000 both ways
    n = ds[3]
    assert n.images == [] and n.solution == {"count": 3}


def test_datasets_dataset_works_as_records(mixed):
    datasets = pytest.importorskip("datasets")
    rows = [json.loads(line) for line in mixed.read_text().splitlines()][:2]
    for r in rows:  # a datasets table needs one type per column
        r["prompt"] = _msg()
        r.pop("difficulty", None)
    hf = datasets.Dataset.from_list(rows)  # unifies solution keys: absent ones become None
    ds = RecordDataset(hf, base_dir=mixed.parent)
    assert len(ds) == 2
    assert ds[1].solution == {"label": "circle", "choices": ["circle", "square"]}
    assert ds[0].solution_original == {"box": [100, 50, 300, 250]}
