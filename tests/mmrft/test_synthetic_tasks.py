"""`data.synthetic` writes every built-in task the recipes train on: detection (with "no objects"
records), temporal grounding (videos), and the shifted split of the RFT-against-SFT study."""

import json

import pytest

from mmrft.config import ConfigError, load_config
from mmrft.data import answer_text, write_synthetic


def _cfg(*overrides):
    return load_config(
        "configs/quickstart.yaml", ["data.synthetic.n_train=30", "data.synthetic.n_eval=6", *overrides]
    )


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_detection_split_has_no_object_records_with_an_empty_list_target(tmp_path):
    from data_pipelines.dataset import JsonlDataset

    cfg = _cfg("data.synthetic.task=detection", "data.synthetic.empty_frac=0.5", "data.synthetic.max_count=2")
    paths = write_synthetic(cfg, tmp_path)
    recs = _records(paths["train"])
    counts = [len(r["solution"]["boxes"]) for r in recs]
    assert 0 in counts and max(counts) <= 2 and any(c > 0 for c in counts)
    ds = JsonlDataset(paths["train"])
    empty = next(i for i, c in enumerate(counts) if c == 0)
    assert answer_text(ds[empty]) == "[]"
    assert (
        json.loads(answer_text(ds[counts.index(max(counts))]))[0]["label"]
        in recs[0]["prompt"][0]["content"][1]["text"]
    )


def test_temporal_grounding_split_is_videos_with_their_segment(tmp_path):
    cfg = _cfg(
        "data.synthetic.task=temporal_grounding",
        "data.synthetic.min_duration=4",
        "data.synthetic.max_duration=5",
    )
    paths = write_synthetic(cfg, tmp_path)
    for r in _records(paths["eval"]):
        assert (tmp_path / r["video"]["path"]).is_file()
        s, e = r["solution"]["segment"]
        assert 0 < s < e <= r["solution"]["duration"] <= 5
        assert r["solution"]["duration"] * 2 == int(r["solution"]["duration"] * 2)  # 2 fps: half-second ends
        assert s * 2 == int(s * 2) and e * 2 == int(e * 2)


def test_shifted_split_is_written_and_the_stamp_rebuilds_on_change(tmp_path):
    cfg = _cfg("data.synthetic.task=grounding", "data.synthetic.combos=seen", "data.synthetic.n_shifted=5",
               "data.synthetic.distractors=1")  # fmt: skip
    paths = write_synthetic(cfg, tmp_path)
    shifted = _records(paths["shifted"])
    assert len(shifted) == 5 and all(len(r["meta"]["objects"]) <= 1 + 1 + 2 for r in shifted)
    assert max(len(r["meta"]["objects"]) for r in _records(paths["train"])) <= 2
    again = write_synthetic(_cfg("data.synthetic.task=grounding"), tmp_path)  # other settings: rebuilt
    assert "shifted" not in again and not (tmp_path / "grounding_shifted.jsonl").exists()


def test_bad_synthetic_settings_are_one_line_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.synthetic.task: 'tracking' is not allowed"):
        _cfg("data.synthetic.task=tracking")
    with pytest.raises(ConfigError, match="min_duration=9 must be <= data.synthetic.max_duration=8"):
        _cfg("data.synthetic.min_duration=9")
    with pytest.raises(ConfigError, match="shifted split is made for the shape tasks"):
        write_synthetic(
            _cfg("data.synthetic.task=temporal_grounding", "data.synthetic.n_shifted=3"), tmp_path
        )


def test_shape_size_settings_reach_the_generator(tmp_path):
    cfg = _cfg(
        "data.synthetic.task=grounding",
        "data.synthetic.distractors=1",
        "data.synthetic.min_size_frac=0.3",
        "data.synthetic.max_size_frac=0.4",
    )
    recs = _records(write_synthetic(cfg, tmp_path)["train"])
    for r in recs:  # every shape is drawn in a 34-45 px square of the 112 px image
        for o in r["meta"]["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert max(x2 - x1, y2 - y1) <= 45
    sides = [
        max(o["box"][2] - o["box"][0], o["box"][3] - o["box"][1]) for r in recs for o in r["meta"]["objects"]
    ]
    assert min(sides) >= 33 and max(sides) >= 40
    with pytest.raises(ConfigError, match="data.synthetic: need 0 < min_size_frac <= max_size_frac"):
        write_synthetic(_cfg("data.synthetic.max_size_frac=0.1"), tmp_path / "x")
