"""Issue 9, bad data: non-finite ground truth is a record error everywhere (the dataset, ``mmrft data
prepare`` and its converters, the JSONL writer); images and video frames past the pixel budget or the
aspect-ratio limit are record errors (skipped and counted in skip mode, one line in error mode)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from data_pipelines.converters import convert_coco, convert_jsonl, convert_temporal
from data_pipelines.dataset import JsonlDataset
from data_pipelines.geometry import check_box, is_finite_number
from data_pipelines.io import write_jsonl
from data_pipelines.records import RecordError
from data_pipelines.synthetic.video import write_video
from data_pipelines.vision import ResizeError, VisionSpec, smart_resize
from mmrft.cli import main

NAN, INF = float("nan"), float("inf")


def _grounding(rid, box, image="a.png"):
    return {"id": rid, "task": "grounding", "images": [image], "prompt": "Find it.", "solution": {"box": box}}


def _write_raw(path, records):
    """JSONL as a careless tool writes it: json.dumps' default writes NaN and Infinity literals."""
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (56, 56), "white").save(tmp_path / "a.png")
    return tmp_path


def test_finite_numbers_and_check_box():
    assert is_finite_number(3) and is_finite_number(-2.5) and is_finite_number(10**300)
    assert not any(is_finite_number(v) for v in (NAN, INF, -INF, 10**400, True, "3", None))
    assert check_box([NAN, 1, 9, 9], None) == "non_finite"  # NaN used to pass: nan <= x is False
    assert check_box([1, 1, 10**400, 9], None) == "non_finite"  # would overflow float() later
    assert check_box([1, 1, 9, 9], (10, 10)) is None and check_box([9, 1, 1, 9], None) == "box_reversed"


def test_prepare_jsonl_never_writes_a_nan_box(folder, tmp_path, capsys):
    src = _write_raw(
        folder / "data.jsonl", [_grounding("ok", [1, 2, 30, 40]), _grounding("nan", [NAN, 2, 30, 40])]
    )
    assert "NaN" in src.read_text()
    for media in (True, False):  # with and without decoding the images
        res = convert_jsonl(src, tmp_path / f"out{media}.jsonl", check_media=media)
        assert [r["id"] for r in map(json.loads, res.path.read_text().splitlines())] == ["ok"]
        assert res.skipped == {"non_finite": 1} and "NaN" not in res.path.read_text()
    # the CLI: skip mode counts it, strict mode stops with one line naming file, line and record
    assert main(["data", "prepare", "jsonl", str(src), str(tmp_path / "cli.jsonl")]) == 0
    assert "skipped 1: non_finite 1" in capsys.readouterr().out
    assert main(["data", "prepare", "jsonl", str(src), str(tmp_path / "strict.jsonl"), "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{src}:2: record 'nan': solution.box [nan, 2, 30, 40] has a NaN" in err
    assert not (tmp_path / "strict.jsonl").exists()


def test_the_jsonl_writer_refuses_non_finite_numbers(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=r"record 'r2' holds a NaN or infinite number; not written"):
        write_jsonl(out, [{"id": "r1", "x": 1.0}, {"id": "r2", "solution": {"segment": [0, INF]}}])
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the first record


def test_coco_boxes_that_are_not_finite_drop_their_image(tmp_path):
    (tmp_path / "imgs").mkdir()
    for k in (1, 2, 3, 4):
        Image.new("RGB", (100, 80)).save(tmp_path / "imgs" / f"{k}.jpg")
    data = {
        "images": [{"id": k, "file_name": f"{k}.jpg", "width": 100, "height": 80} for k in (1, 2, 3, 4)],
        "categories": [{"id": 1, "name": "dog"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [NAN, 10, 20, 20]},
            {"id": 3, "image_id": 3, "category_id": 1, "bbox": [10, 10, 20]},  # used to crash the unpacking
            {"id": 4, "image_id": 4, "category_id": 1, "bbox": [10, 10, 10**400, 20]},
        ],
    }
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    res = convert_coco(ann, tmp_path / "imgs", tmp_path / "out")
    recs = [json.loads(x) for x in res.path.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["coco-1-dog"] and recs[0]["solution"]["boxes"] == [[10, 10, 30, 30]]
    assert res.skipped == {"non_finite": 2, "bad_box": 1}


def test_temporal_rows_with_non_finite_or_non_numeric_times_are_skipped(tmp_path):
    frames = np.full((12, 32, 32, 3), 200, np.uint8)  # 3 s at 4 fps
    write_video(tmp_path / "v" / "A.mp4", frames, fps=4)
    ann = tmp_path / "sta.txt"
    ann.write_text("A 0.5 2.0##ok.\nA nan 2.0##nan start.\nA 0.5 inf##inf end.\nA x 2.0##not a number.\n")
    res = convert_temporal(ann, tmp_path / "v", tmp_path / "out")
    assert [json.loads(x)["sentence"] for x in res.path.read_text().splitlines()] == ["ok."]
    assert res.skipped == {"non_finite": 2, "bad_type": 1}
    anet = tmp_path / "anet.json"
    anet.write_text(json.dumps({
        "A": {"duration": NAN, "timestamps": [[0, 1]], "sentences": ["nan duration"]},
        "B": {"duration": "long", "timestamps": [[0, 1], [0.5]], "sentences": ["text", "one time"]},
    }))  # fmt: skip
    res = convert_temporal(anet, tmp_path / "v", tmp_path / "out2")
    assert res.records == 0 and res.skipped == {"non_finite": 1, "bad_type": 2}


def test_an_image_past_the_pixel_budget_is_a_record_error(folder):
    path = _write_raw(folder / "d.jsonl", [_grounding("big", [1, 1, 9, 9]), _grounding("b", [1, 1, 9, 9])])
    spec = VisionSpec(max_image_pixels=3000)  # a.png is 56x56 = 3136 pixels
    with pytest.raises(RecordError) as e:
        JsonlDataset(path, vision=spec)[0]
    assert e.value.reason == "image_too_large"
    assert str(e.value) == (
        f"{path}:1: record 'big': image {folder / 'a.png'} is 56x56 = 3,136 pixels, over the budget of 3,000 "
        "(VisionSpec.max_image_pixels); downscale it first"
    )
    ds = JsonlDataset(path, vision=spec, on_bad_record="skip")
    with pytest.raises(RecordError, match="every record is bad"):
        ds[0]
    assert ds.skipped == {"image_too_large": 2}
    assert JsonlDataset(path, vision=VisionSpec(max_image_pixels=3136))[0].id == "big"  # at the budget: fine


def test_video_frames_past_the_budget_or_the_aspect_ratio_are_record_errors(tmp_path):
    write_video(tmp_path / "small.mp4", np.full((8, 32, 32, 3), 90, np.uint8), fps=4)
    write_video(tmp_path / "thin.mp4", np.full((8, 2, 640, 3), 90, np.uint8), fps=4)  # 320:1
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    recs = [
        {"id": v, "task": "temporal_grounding", "video": f"{v}.mp4", "prompt": prompt,
         "solution": {"segment": [0.0, 1.0]}}
        for v in ("small", "thin")
    ]  # fmt: skip
    path = _write_raw(tmp_path / "v.jsonl", recs)
    spec = VisionSpec(video_min_pixels=32 * 32, max_image_pixels=1000)
    with pytest.raises(RecordError, match=r"v.jsonl:1: record 'small': video .* 32x32 = 1,024-pixel frames"):
        JsonlDataset(path, vision=spec)[0]
    spec = VisionSpec(video_min_pixels=32 * 32)
    with pytest.raises(
        RecordError, match=r"v.jsonl:2: record 'thin': video .*thin.mp4: smart_resize: aspect"
    ):
        JsonlDataset(path, vision=spec)[1]
    ds = JsonlDataset(path, vision=spec, on_bad_record="skip")
    assert [s.id for s in ds] == ["small"] and ds.skipped == {"extreme_aspect_ratio": 1}


def test_smart_resize_failures_carry_a_reason():
    for args, reason in (((0, 5), "bad_image_size"), ((20, 30_000), "extreme_aspect_ratio"),
                         ((30, 5900, 28, 4 * 28 * 28, 100 * 28 * 28), "image_too_thin")):  # fmt: skip
        with pytest.raises(ResizeError) as e:
            smart_resize(*args)
        assert e.value.reason == reason and isinstance(e.value, ValueError)


def test_lines_that_are_not_utf8_or_not_usable_json_are_bad_records(folder):
    path = folder / "raw.jsonl"
    good = json.dumps(_grounding("g", [1, 1, 9, 9])).encode()
    path.write_bytes(good + b"\n" + b'{"id": "\xff\xfe"}\n' + b"[" * 100_000 + b"\n")
    ds = JsonlDataset(path, on_bad_record="skip")
    assert len(ds) == 1 and ds.skipped == {"bad_json": 2}
    with pytest.raises(RecordError, match=r"raw.jsonl:2: not valid UTF-8 \(byte 9\)"):
        JsonlDataset(path)
