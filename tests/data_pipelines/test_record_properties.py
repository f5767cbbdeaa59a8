"""Property-based tests (hypothesis) for the record validator and the dataset's per-record checks: any
record (arbitrary JSON, or a valid record with fields replaced by hostile values) is accepted with
finite ground truth, or rejected with a ``RecordError`` of one line; never another exception."""

from __future__ import annotations

import json
import math
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from data_pipelines.dataset import RecordDataset
from data_pipelines.records import TASKS, RecordError, check_record
from data_pipelines.sample import Sample
from data_pipelines.vision import VisionSpec

PROFILE = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))

HOSTILE = [
    float("nan"),
    float("inf"),
    -float("inf"),
    10**400,
    -1,
    0,
    1e308,
    True,
    None,
    "",
    "3",
    [],
    {},
    [1, 2],
]
scalars = st.one_of(
    st.sampled_from(HOSTILE),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)

IMG_PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
VID_PROMPT = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "Q?"}]}]
VALID = {
    "classification": {"images": ["ok.png"], "solution": {"label": "cat", "choices": ["cat", "dog"]}},
    "counting": {"images": ["ok.png"], "solution": {"count": 3}},
    "grounding": {"images": ["ok.png"], "solution": {"box": [1, 2, 10, 12]}},
    "detection": {"images": ["ok.png"], "solution": {"boxes": [[1, 2, 10, 12]], "labels": ["cat"]}},
    "temporal_grounding": {"video": {"path": "v.mp4", "fps": 2.0}, "solution": {"segment": [1.0, 2.0]}},
    "tracking": {"video": "v.mp4", "solution": {"boxes": [[1, 1, 5, 5], None], "times": [0.0, 0.5]}},
    "chart_to_code": {"images": ["ok.png"], "solution": {"code": "plt.bar([1], [2])"}},
}
PATHS = [  # (path into the record, as key steps) that mutations replace
    ("id",), ("task",), ("images",), ("images", 0), ("video",), ("video", "fps"), ("video", "max_frames"),
    ("prompt",), ("coord_space",), ("solution",), ("solution", "label"), ("solution", "choices"),
    ("solution", "count"), ("solution", "box"), ("solution", "box", 0), ("solution", "box", 3),
    ("solution", "boxes"), ("solution", "boxes", 0), ("solution", "boxes", 0, 2), ("solution", "labels"),
    ("solution", "segment"), ("solution", "segment", 1), ("solution", "duration"), ("solution", "times"),
    ("solution", "times", 0), ("solution", "code"),
]  # fmt: skip


def _valid(task: str, rid: str = "r") -> dict:
    rec = {"id": rid, "task": task, "prompt": VID_PROMPT if "video" in VALID[task] else IMG_PROMPT}
    rec.update(json.loads(json.dumps(VALID[task])))
    return rec


def _set(rec: dict, path: tuple, value) -> dict:
    node = rec
    for key in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(key), (dict, list)):
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and key < len(node):
            node = node[key]
        else:
            return rec
    if isinstance(node, dict) or (
        isinstance(node, list) and isinstance(path[-1], int) and path[-1] < len(node)
    ):
        node[path[-1]] = value
    return rec


@st.composite
def mutated_records(draw, rid: str = "r"):
    rec = _valid(draw(st.sampled_from(list(TASKS))), rid)
    for _ in range(draw(st.integers(1, 3))):
        rec = _set(rec, draw(st.sampled_from(PATHS)), draw(json_values))
    return rec


records = st.one_of(
    mutated_records(), json_values, st.dictionaries(st.sampled_from(["id", "task", "solution"]), json_values)
)


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def _finite(v) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


@PROFILE
@given(records)
def test_check_record_accepts_finite_ground_truth_or_raises_a_record_error(rec):
    try:
        out = check_record(rec)
    except RecordError as e:
        assert e.reason and "\n" not in str(e)
        return
    assert isinstance(out["id"], str) and out["task"] in TASKS and isinstance(out["prompt"], list)
    sol = out["solution"]
    for key in ("box", "boxes", "segment", "duration", "times", "count"):
        assert all(_finite(v) for v in _numbers(sol.get(key))), (key, sol)


def _bomb_header() -> bytes:
    """The first bytes of a 20000x20000 PNG: enough for PIL to refuse it while opening."""
    ihdr = struct.pack(">IIBBBBB", 20_000, 20_000, 8, 2, 0, 0, 0)
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + crc


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("media")
    Image.new("RGB", (40, 30), "white").save(d / "ok.png")
    Image.new("RGB", (2_000, 4), "white").save(d / "wide.png")  # 500:1
    (d / "bomb.png").write_bytes(_bomb_header())
    (d / "corrupt.png").write_bytes(b"not an image")
    (d / "v.mp4").write_bytes(b"not a video either")
    return d


@st.composite
def dataset_records(draw):
    recs = []
    for k in range(draw(st.integers(1, 4))):
        rec = draw(st.one_of(mutated_records(f"r{k}"), json_values))
        if isinstance(rec, dict) and isinstance(rec.get("images"), list) and rec["images"]:
            rec["images"][0] = draw(
                st.sampled_from(["ok.png", "wide.png", "bomb.png", "corrupt.png", "gone.png"])
            )
        recs.append(rec)
    return recs


def test_the_dataset_skips_or_names_every_bad_record(media):
    spec = VisionSpec(max_image_pixels=1_000_000)

    @PROFILE
    @given(dataset_records())
    def check(recs):
        ds = RecordDataset(recs, media, vision=spec, on_bad_record="skip", source="d.jsonl")
        assert len(ds) + sum(ds.skipped.values()) == len(recs)
        for j in range(len(ds)):
            try:
                sample = ds.load(j)
            except RecordError as e:  # found only when loading: the skip path of ds[i]
                assert e.reason and "\n" not in str(e)
                continue
            assert isinstance(sample, Sample)
            for key in ("box", "boxes"):
                assert all(_finite(v) for v in _numbers(sample.solution.get(key)))
        try:
            strict = RecordDataset(recs, media, vision=spec, on_bad_record="error", source="d.jsonl")
            for j in range(len(strict)):
                strict[j]
        except RecordError as e:
            assert str(e).startswith("d.jsonl:") and "\n" not in str(e)

    check()
