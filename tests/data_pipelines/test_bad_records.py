"""Bad data: strict mode stops with one line naming file, line, record id and problem; skip mode counts."""

from __future__ import annotations

import functools
import json
import struct
import zlib

import pytest
from PIL import Image

from data_pipelines.dataset import JsonlDataset
from data_pipelines.records import RecordError


def _msg(text="Q?"):
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def _rec(rid, task="grounding", images=("ok.png",), solution=None, **extra):
    r = {
        "id": rid,
        "task": task,
        "images": list(images),
        "prompt": _msg(),
        "solution": solution or {"box": [1, 1, 9, 9]},
    }
    r.update(extra)
    return r


def _video_rec(rid, task, solution):
    prompt = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "When?"}]}]
    return {"id": rid, "task": task, "video": "clip.mp4", "prompt": prompt, "solution": solution}


@functools.cache
def bomb_png(side: int = 20_000) -> bytes:
    """A valid side x side 1-bit PNG (400 M pixels at 20000, about 50 KB: every row is zeros)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    z = zlib.compressobj(6)
    rows = (b"\x00" * (1 + (side + 7) // 8)) * 1000
    data = b"".join(z.compress(rows) for _ in range(side // 1000)) + z.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


NAN, INF = float("nan"), float("inf")


# (record or raw line, reason counted in skip mode, words the strict-mode error must contain)
CASES = [
    (_rec("missing", images=["nope.png"]), "missing_file", "file not found"),
    (_rec("corrupt", images=["corrupt.png"]), "corrupt_image", "cannot read image"),
    (_rec("truncated", images=["truncated.png"]), "corrupt_image", "cannot read image"),
    (_rec("truncjpeg", images=["truncated.jpg"]), "corrupt_image", "image file is truncated"),
    (_rec("outside", solution={"box": [5, 5, 40, 9]}), "box_outside_image", "does not fit the 20x20 image"),
    (_rec("reversed", solution={"box": [9, 1, 1, 9]}), "box_reversed", "needs x1 < x2 and y1 < y2"),
    # issue 9: non-finite ground truth is a record error (json.dumps writes NaN / Infinity, json reads them)
    (_rec("nanbox", solution={"box": [NAN, 1, 9, 9]}), "non_finite", "[nan, 1, 9, 9] has a NaN or infinite"),
    (_rec("infbox", solution={"box": [1, 1, INF, 9]}), "non_finite", "NaN or infinite coordinate"),
    (_rec("hugebox", solution={"box": [1, 1, 10**400, 9]}), "non_finite", "NaN or infinite coordinate"),
    (
        _rec(
            "nandet",
            task="detection",
            solution={"boxes": [[1, 1, 9, 9], [NAN, 1, 2, 3]], "labels": ["a", "b"]},
        ),
        "non_finite",
        "solution.boxes[1] [nan, 1, 2, 3] has a NaN",
    ),
    (_video_rec("nanseg", "temporal_grounding", {"segment": [NAN, 3.0]}), "non_finite", "segment [nan, 3.0]"),
    (_video_rec("infseg", "temporal_grounding", {"segment": [0, INF]}), "non_finite", "NaN or infinite time"),
    (
        _video_rec("infdur", "temporal_grounding", {"segment": [0, 3], "duration": INF}),
        "non_finite",
        "solution.duration inf is NaN or infinite",
    ),
    (_video_rec("nantrack", "tracking", {"boxes": [[1, 1, 5, 5], [1, NAN, 5, 5]]}), "non_finite", "boxes[1]"),
    (
        _video_rec("nantimes", "tracking", {"boxes": [[1, 1, 5, 5]], "times": [NAN]}),
        "non_finite",
        "solution.times has a NaN",
    ),
    # keys a reward reads are checked whatever the task; any NaN in the solution is a record error
    (
        _rec("straycount", task="classification", solution={"label": "a", "count": NAN}),
        "bad_type",
        "count must",
    ),
    (
        _rec("strayboxes", task="classification", solution={"label": "a", "boxes": 3}),
        "bad_type",
        "list of xyxy",
    ),
    (
        _rec("nestednan", task="classification", solution={"label": "a", "meta": {"scale": [1, NAN]}}),
        "non_finite",
        "solution.meta.scale[1] is nan: ground truth must be finite",
    ),
    # issue 9: images past the pixel budget and extreme aspect ratios are record errors
    (_rec("bomb", images=["bomb.png"]), "image_too_large", "bomb.png is too large to decode"),
    (_rec("wide", images=["wide.png"]), "extreme_aspect_ratio", "aspect ratio 1500.0 of a 20x30000"),
    (_rec("emptylabel", task="classification", solution={"label": " "}), "empty_label", "label is empty"),
    (_rec("unknown", task="segmentation"), "unknown_task", "unknown task 'segmentation'"),
    (_rec("wrongtype", task="counting", solution={"count": "3"}), "bad_type", "non-negative integer"),
    (_rec("nosolution", task="detection", solution={"boxes": []}), "missing_field", "boxes+labels"),
    (_rec("placeholders", images=["ok.png", "ok.png"]), "placeholder_mismatch", "1 image placeholder"),
    ('{"id": "broken", "task": ', "bad_json", "not valid JSON"),
    ('{"id": "big", "n": ' + "1" * 5000 + "}", "bad_json", "not usable JSON (ValueError"),
]


@pytest.fixture
def folder(tmp_path):
    Image.new("RGB", (20, 20), "white").save(tmp_path / "ok.png")
    (tmp_path / "corrupt.png").write_bytes(b"this is not a png at all")
    Image.new("RGB", (64, 64), "red").save(tmp_path / "full.png")
    (tmp_path / "truncated.png").write_bytes((tmp_path / "full.png").read_bytes()[:60])
    noise = Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48)
    noise.save(tmp_path / "full.jpg", quality=95)
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:1200])
    (tmp_path / "bomb.png").write_bytes(bomb_png())
    Image.new("RGB", (30_000, 20), "white").save(tmp_path / "wide.png")
    (tmp_path / "clip.mp4").write_bytes(b"never opened: the solution fails the schema check first")
    return tmp_path


def _file(folder, bad):
    good = [_rec("good1"), _rec("good2", solution={"box": [0, 0, 20.5, 20]})]  # 0.5 px overhang is clipped
    lines = [json.dumps(good[0]), bad if isinstance(bad, str) else json.dumps(bad), json.dumps(good[1])]
    path = folder / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("bad,reason,words", CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_strict_mode_names_file_line_id_and_problem(folder, bad, reason, words):
    path = _file(folder, bad)
    ds = None
    with pytest.raises(RecordError) as info:
        ds = JsonlDataset(path, on_bad_record="error")
        [ds[i] for i in range(len(ds))]
    msg = str(info.value)
    assert "\n" not in msg and info.value.reason == reason
    assert msg.startswith(f"{path}:2: ") and words in msg
    if not isinstance(bad, str):
        assert f"record {bad['id']!r}" in msg


@pytest.mark.parametrize("bad,reason,words", CASES, ids=[c[1] + "-" + str(i) for i, c in enumerate(CASES)])
def test_skip_mode_skips_and_counts(folder, bad, reason, words):
    ds = JsonlDataset(_file(folder, bad), on_bad_record="skip")
    samples = list(ds)
    assert [s.id for s in samples] == ["good1", "good2"]
    assert dict(ds.skipped) == {reason: 1}
    assert ds.skipped_summary() == f"skipped 1 record(s): {reason} 1"
    # 20x20 is upscaled to 56x56 (min_pixels 3136); the 20.5 overhang is clipped to 20 first: 20 * 2.8 = 56
    assert samples[1].solution["box"] == pytest.approx([0, 0, 56, 56])


def test_skip_mode_replaces_a_record_that_fails_on_load(folder):
    ds = JsonlDataset(_file(folder, CASES[1][0]), on_bad_record="skip")
    assert len(ds) == 3  # the corrupt file exists, so only loading finds it out
    assert ds[1].id == "good2" and ds.skipped == {"corrupt_image": 1}
    assert ds[1].id == "good2" and ds.skipped == {"corrupt_image": 1}  # counted once


def test_duplicate_ids_and_bad_policy(folder):
    path = folder / "dup.jsonl"
    path.write_text(json.dumps(_rec("a")) + "\n\n" + json.dumps(_rec("a")) + "\n")
    with pytest.raises(RecordError, match=r"dup.jsonl:3: record 'a': id 'a' appears twice"):
        JsonlDataset(path)
    with pytest.raises(ValueError, match="on_bad_record must be one of"):
        JsonlDataset(path, on_bad_record="ignore")
