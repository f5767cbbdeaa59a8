"""Converters on small inputs in the real formats (written here), through the API and the CLI."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from data_pipelines.converters import (
    convert_chart,
    convert_classification,
    convert_coco,
    convert_jsonl,
    convert_refcoco,
    convert_temporal,
)
from data_pipelines.dataset import JsonlDataset
from data_pipelines.io import write_jsonl
from data_pipelines.records import RecordError
from data_pipelines.synthetic.video import write_video
from mmrft.cli import main


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _img(path, size=(100, 80)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (120, 160, 200)).save(path)


@pytest.fixture
def coco(tmp_path):
    imgs = tmp_path / "train2017"
    for k in (1, 2, 3, 4):
        _img(imgs / f"{k:012d}.jpg")
    data = {
        "images": [
            {"id": k, "file_name": f"{k:012d}.jpg", "width": 100, "height": 80} for k in (1, 2, 3, 4, 5)
        ],
        "categories": [{"id": 1, "name": "dog"}, {"id": 2, "name": "cat"}, {"id": 3, "name": "bird"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [50, 5, 10, 10], "iscrowd": 0},
            {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 0},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [1, 1, 2, 2], "iscrowd": 0},
            {"id": 14, "image_id": 2, "category_id": 2, "bbox": [0, 0, 100, 80], "iscrowd": 1},  # crowd
            {"id": 15, "image_id": 3, "category_id": 2, "bbox": [90, 70, 30, 30], "iscrowd": 0},  # outside
            {"id": 16, "image_id": 4, "category_id": 2, "bbox": [20, 20, 10, 10], "iscrowd": 0},
            {"id": 17, "image_id": 5, "category_id": 1, "bbox": [20, 20, 10, 10], "iscrowd": 0},  # no file
        ],
    }
    ann = tmp_path / "instances_train2017.json"
    ann.write_text(json.dumps(data))
    return ann, imgs


def test_coco_all_shots_boxes_and_skips(coco, tmp_path):
    ann, imgs = coco
    res = convert_coco(ann, imgs, tmp_path / "out", prompt_style="answer_only")
    recs = {r["id"]: r for r in _records(res.path)}
    # (image, category) pairs: 1-dog, 1-cat, 2-dog, 4-cat; image 3 dropped (bad box), 5 (missing file)
    assert sorted(recs) == ["coco-1-cat", "coco-1-dog", "coco-2-dog", "coco-4-cat"]
    assert recs["coco-1-dog"]["solution"] == {
        "boxes": [[10, 20, 40, 60], [50, 5, 60, 15]],
        "labels": ["dog", "dog"],
    }
    assert res.skipped == {"crowd_annotation": 1, "box_outside_image": 1, "missing_file": 1}
    assert res.classes == {"dog": 2, "cat": 2}
    text = recs["coco-1-dog"]["prompt"][0]["content"][1]["text"]
    assert text.startswith("Detect every dog in the image. Coordinates are pixels of the image.")
    assert text.endswith("If there is none, answer <answer>[]</answer>.")
    ds = JsonlDataset(res.path)  # the symlinked images load
    assert len(ds) == 4 and ds[0].images[0].size == (112, 84)
    assert "wrote 4 records" in res.summary() and "skipped 3: " in res.summary()


def test_coco_few_shot_subset_and_negatives_are_seeded(coco, tmp_path):
    ann, imgs = coco
    a = convert_coco(ann, imgs, tmp_path / "a.jsonl", shots=1, seed=3, negatives=1)
    b = convert_coco(ann, imgs, tmp_path / "b.jsonl", shots=1, seed=3, negatives=1)
    ra = _records(a.path)
    assert ra == _records(b.path)  # seeded
    assert a.classes == {"dog": 1, "cat": 1}
    negatives = [r for r in ra if not r["solution"]["boxes"]]
    assert len(negatives) == 2 and all(r["solution"]["labels"] == [] for r in negatives)
    sub = convert_coco(ann, imgs, tmp_path / "c.jsonl", categories=["cat"], coord_space="norm1000")
    assert sub.classes == {"cat": 2} and all(r["coord_space"] == "norm1000" for r in _records(sub.path))
    with pytest.raises(ValueError, match=r"\['zebra'\] are not in"):
        convert_coco(ann, imgs, tmp_path / "d.jsonl", categories=["zebra"])


def test_lvis_images_named_by_coco_url(coco, tmp_path):
    ann, imgs = coco
    data = json.loads(ann.read_text())
    for img in data["images"]:
        img["coco_url"] = "http://images.cocodataset.org/train2017/" + img.pop("file_name")
    lvis = tmp_path / "lvis_v1_train.json"
    lvis.write_text(json.dumps(data))
    assert convert_coco(lvis, imgs, tmp_path / "lvis", name="lvis").records == 4


def test_refcoco_refs_pickle(tmp_path):
    _img(tmp_path / "coco" / "COCO_train2014_000000000009.jpg", (200, 100))
    inst = {
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "width": 200, "height": 100}],
        "annotations": [{"id": 70, "image_id": 9, "category_id": 1, "bbox": [20.5, 10, 50, 40]}],
        "categories": [{"id": 1, "name": "person"}],
    }
    refdir = tmp_path / "refcoco"
    refdir.mkdir()
    (refdir / "instances.json").write_text(json.dumps(inst))
    refs = [
        {"ref_id": 1, "ann_id": 70, "image_id": 9, "split": "val", "category_id": 1,
         "sentences": [{"sent": "man on the left", "raw": "Man on the left"}, {"sent": "guy in red"}]},
        {"ref_id": 2, "ann_id": 70, "image_id": 9, "split": "train", "category_id": 1,
         "sentences": [{"sent": "person"}]},
        {"ref_id": 3, "ann_id": 99, "image_id": 9, "split": "val", "category_id": 1, "sentences": [{"sent": "x"}]},
    ]  # fmt: skip
    with open(refdir / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    res = convert_refcoco(refdir / "refs(unc).p", tmp_path / "coco", tmp_path / "out", split="val")
    recs = _records(res.path)
    assert [r["id"] for r in recs] == ["refcoco-1-0", "refcoco-1-1"]
    assert recs[0]["solution"] == {"box": [20.5, 10, 70.5, 50]} and recs[0]["expression"] == "man on the left"
    assert 'describes: "man on the left"' in recs[0]["prompt"][0]["content"][1]["text"]
    assert res.skipped == {"dangling_ref": 1} and res.classes == {"person": 2}
    assert res.path.name == "refcoco_val.jsonl"


def test_classification_imagefolder_k_shot(tmp_path):
    root = tmp_path / "CUB"
    for cls, n in (
        ("001.Black_footed_Albatross", 3),
        ("002.Laysan_Albatross", 2),
        ("003.Sooty_Albatross", 1),
    ):
        for k in range(n):
            _img(root / cls / f"img_{k}.jpg", (40, 40))
    (root / "001.Black_footed_Albatross" / "notes.txt").write_text("not an image")
    res = convert_classification(root, tmp_path / "out", shots=2, seed=0, subject="bird species")
    recs = _records(res.path)
    assert res.classes == {"Black footed Albatross": 2, "Laysan Albatross": 2, "Sooty Albatross": 1}
    assert res.skipped == {"not_an_image": 1}
    assert recs[0]["prompt"][0]["content"][1]["text"] == (
        "What is the bird species in the image? Choose from: Black footed Albatross, Laysan Albatross, "
        "Sooty Albatross. Answer with <answer>label</answer>."
    )
    assert recs[0]["solution"]["choices"] == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    again = convert_classification(root, tmp_path / "again", shots=2, seed=0, subject="bird species")
    assert [r["id"] for r in _records(again.path)] == [r["id"] for r in recs]
    plain = convert_classification(root, tmp_path / "plain.jsonl", choices=False, labels="raw")
    assert "Choose from" not in _records(plain.path)[0]["prompt"][0]["content"][1]["text"]
    assert "001.Black_footed_Albatross" in plain.classes


@pytest.fixture
def videos(tmp_path):
    vdir = tmp_path / "Charades_v1"
    frames = np.full((12, 32, 32, 3), 200, np.uint8)  # 3 s at 4 fps
    write_video(vdir / "AO8RW.mp4", frames, fps=4)
    write_video(vdir / "v_abc.mp4", frames, fps=4)
    return vdir


def test_charades_sta_lines(videos, tmp_path):
    ann = tmp_path / "charades_sta_test.txt"
    ann.write_text(
        "AO8RW 0.5 2.0##a person opens a door.\n"
        "AO8RW 1.0 3.6##a person sits.\n"  # 0.6 s past the 3 s end: clipped to 3.0
        "AO8RW 1.0 9.0##a person leaves.\n"  # far past the end
        "AO8RW 2.0 1.0##reversed.\n"
        "MISSING 0.0 1.0##no video.\n"
    )
    res = convert_temporal(ann, videos, tmp_path / "out", fps=2.0)
    recs = _records(res.path)
    assert [r["solution"] for r in recs] == [
        {"segment": [0.5, 2.0], "duration": 3.0},
        {"segment": [1.0, 3.0], "duration": 3.0},
    ]
    assert res.skipped == {"segment_outside_video": 1, "segment_reversed": 1, "missing_file": 1}
    assert recs[0]["video"]["fps"] == 2.0 and recs[0]["sentence"] == "a person opens a door."
    assert recs[0]["prompt"][0]["content"][0] == {"type": "video"}
    s = JsonlDataset(
        res.path, vision=__import__("data_pipelines.vision").vision.VisionSpec(video_min_pixels=32 * 32)
    )[0]
    assert s.video.frames.shape[0] == 6 and s.solution["segment"] == [0.5, 2.0]  # 3 s at 2 fps
    bad = tmp_path / "bad.txt"
    bad.write_text("AO8RW 0.5 2.0 a person without the separator\n")
    with pytest.raises(ValueError, match=r"bad.txt:1: expected 'VIDEO_ID START END##sentence'"):
        convert_temporal(bad, videos, tmp_path / "bad_out")


def test_activitynet_captions_json(videos, tmp_path):
    ann = tmp_path / "val_1.json"
    ann.write_text(json.dumps({"v_abc": {"duration": 3.0, "timestamps": [[0, 1.5], [1.0, 2.9]],
                                         "sentences": ["A man waves.", " He sits. "]}}))  # fmt: skip
    recs = _records(convert_temporal(ann, videos, tmp_path / "out").path)
    assert [r["solution"]["segment"] for r in recs] == [[0.0, 1.5], [1.0, 2.9]]
    assert [r["id"] for r in recs] == ["val_1-v_abc-0", "val_1-v_abc-1"] and recs[1]["sentence"] == "He sits."


def test_chart_pairs(tmp_path):
    src = tmp_path / "chartmimic"
    _img(src / "bar_1.png")
    (src / "bar_1.py").write_text("import matplotlib.pyplot as plt\nplt.bar([1], [2])\n")
    _img(src / "line_2.png")  # no code
    (src / "orphan.py").write_text("print(1)\n")
    res = convert_chart(src, tmp_path / "out")
    (rec,) = _records(res.path)
    assert rec["task"] == "chart_to_code" and rec["solution"]["code"].startswith("import matplotlib")
    assert rec["solution"]["image"] == rec["images"][0] == "images/chartmimic/bar_1.png"
    assert res.skipped == {"image_without_code": 1, "code_without_image": 1}
    s = JsonlDataset(res.path)[0]
    assert s.solution["image"] == str(res.path.parent / "images/chartmimic/bar_1.png")


def test_jsonl_validate_and_normalise(tmp_path):
    src = tmp_path / "mine"
    _img(src / "pics" / "a.png", (56, 56))
    (src / "pics" / "broken.png").write_bytes(b"garbage")
    lines = [
        {"id": "a", "task": "grounding", "images": ["pics/a.png"], "prompt": "Find it.", "solution": {"box": [1, 2, 30, 40]}},
        {"id": "b", "task": "grounding", "images": ["pics/broken.png"], "prompt": "Find it.", "solution": {"box": [1, 2, 3, 4]}},
        {"id": "c", "task": "counting", "images": ["pics/a.png"], "prompt": "How many?", "solution": {"count": -1}},
    ]  # fmt: skip
    write_jsonl(src / "data.jsonl", lines)
    res = convert_jsonl(src / "data.jsonl", tmp_path / "clean" / "data.jsonl")
    (rec,) = _records(res.path)
    assert rec["images"] == ["../mine/pics/a.png"]  # relative to the output's folder
    assert rec["prompt"] == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find it."}]}
    ]
    assert res.skipped == {"corrupt_image": 1, "bad_type": 1} and res.classes == {"grounding": 1}
    assert JsonlDataset(res.path)[0].solution["box"] == [1, 2, 30, 40]
    # strict: schema problems surface while reading the file (line 3), before any image is decoded
    with pytest.raises(RecordError, match=r"data.jsonl:3: record 'c': solution.count must be a non-negative"):
        convert_jsonl(src / "data.jsonl", tmp_path / "strict.jsonl", on_bad_record="error")
    write_jsonl(src / "data.jsonl", lines[:2])
    with pytest.raises(RecordError, match=r"data.jsonl:2: record 'b': cannot read image"):
        convert_jsonl(src / "data.jsonl", tmp_path / "strict.jsonl", on_bad_record="error")
    assert not (tmp_path / "strict.jsonl").exists()


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    def records():
        yield {"id": "1"}
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_jsonl(tmp_path / "out.jsonl", records())
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary file


def test_cli_prepare_summary_and_one_line_errors(coco, tmp_path, capsys):
    ann, imgs = coco
    assert (
        main(
            ["data", "prepare", "coco", str(ann), str(tmp_path / "o"), "--images", str(imgs), "--shots", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "wrote 2 records" in out and "2 classes: cat 1, dog 1" in out
    assert main(["data", "prepare", "classification", str(tmp_path / "nope"), str(tmp_path / "o2")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a folder" in err
    assert main(["data", "synth", "counting", str(tmp_path / "syn"), "--n", "3"]) == 0
    assert len(_records(tmp_path / "syn" / "counting_train.jsonl")) == 3
    argv = ["data", "synth", "grounding", str(tmp_path / "syn"), "--n", "2", "--coord-space", "norm1000"]
    assert main([*argv, "--distractors", "3", "--background", "noise"]) == 0
    rec = _records(tmp_path / "syn" / "grounding_train.jsonl")[0]
    assert rec["coord_space"] == "norm1000" and "0-1000" in rec["prompt"][0]["content"][1]["text"]
