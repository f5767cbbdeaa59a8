"""`mmrft data filter` on the tiny model: pass rates under K samples, the band, the unsolved file, the
histogram, and the same result for the same seed."""

import json
import zlib
from pathlib import Path

import pytest

from mmrft.cli import main
from mmrft.selection import Difficulty, histogram, parse_band

HERE = Path(__file__)


def known_passes(completions, passes, **columns):
    """1.0 for the first ``passes`` of a record's completions (they arrive together), else 0: the
    record's pass rate is passes / K whatever the model writes."""
    seen: dict = {}
    out = []
    for rid, p in zip(columns["id"], passes):
        seen[rid] = seen.get(rid, 0) + 1
        out.append(1.0 if seen[rid] <= p else 0.0)
    return out


def text_coin(completions, **columns):
    """A reward that depends on what was sampled: 1.0 for about half of all texts."""
    return [float(zlib.crc32(c.encode()) % 2) for c in completions]


def _records(shapes_dir, tmp_path, passes):
    lines = (shapes_dir / "classification_heldout.jsonl").read_text().splitlines()
    recs = []
    for line, p in zip(lines, passes):
        r = json.loads(line)
        r["passes"] = p
        recs.append(r)
    sub = tmp_path / "src"
    sub.mkdir()
    (sub / "images").symlink_to(shapes_dir / "images")
    path = sub / "records.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, [r["id"] for r in recs]


def test_filter_keeps_the_band_and_writes_the_unsolved_apart(tmp_path, tiny_model_dir, shapes_dir, capsys):
    passes = [0, 1, 2, 4, 7, 8]  # of K = 8: rates 0, .125, .25, .5, .875, 1
    data, ids = _records(shapes_dir, tmp_path, passes)
    out, unsolved = tmp_path / "sel" / "kept.jsonl", tmp_path / "sel" / "unsolved.jsonl"
    code = main(["data", "filter", "--model", str(tiny_model_dir), "--data", str(data), "--k", "8",
                 "--keep", "0.1:0.9", "--out", str(out), "--unsolved", str(unsolved),
                 f"rewards=[{{name: '{HERE}:known_passes'}}]", "rollout.max_completion_length=3",
                 "eval.batch_size=4"])  # fmt: skip
    assert code == 0
    kept = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in kept] == ids[1:5]
    assert [r["pass_rate"] for r in kept] == [1 / 8, 2 / 8, 4 / 8, 7 / 8]
    assert [r["mean_reward"] for r in kept] == [1 / 8, 2 / 8, 4 / 8, 7 / 8]
    assert all(r["pass_samples"] == 8 for r in kept)
    (never,) = [json.loads(x) for x in unsolved.read_text().splitlines()]
    assert never["id"] == ids[0] and never["pass_rate"] == 0.0
    # the image paths still resolve from the new folder
    assert (out.parent / kept[0]["images"][0]).is_file()
    printed = capsys.readouterr().out
    assert " 0/8        1  #" in printed and " 8/8        1  #" in printed and " 3/8        0  \n" in printed
    assert "kept 4 with pass rate in [0.1, 0.9]" in printed and "never solved: 1" in printed


def test_filter_is_deterministic_for_a_seed(tmp_path, tiny_model_dir, shapes_dir):
    data, _ = _records(shapes_dir, tmp_path, [0] * 6)

    def run(name, seed):
        out = tmp_path / f"{name}.jsonl"
        code = main(["data", "filter", "--model", str(tiny_model_dir), "--data", str(data), "--k", "4",
                     "--temperature", "1.0", "--keep", "0:1", "--out", str(out), "--seed", str(seed),
                     f"rewards=[{{name: '{HERE}:text_coin'}}]", "rollout.max_completion_length=4",
                     f"eval.batch_size={2 if name == 'a' else 6}"])  # fmt: skip
        assert code == 0
        return [json.loads(x)["pass_rate"] for x in out.read_text().splitlines()]

    a, b, c = run("a", 1), run("b", 1), run("c", 2)
    assert len(a) == 6 and a == b  # same seed, another batch size: the same samples
    assert a != c and len(set(a)) > 1  # the samples (so the rates) do depend on the seed


def test_band_and_histogram():
    assert parse_band("0.1:0.9") == (0.1, 0.9)
    with pytest.raises(ValueError, match=r"--keep '0.9:0.1': need 0 <= LO <= HI <= 1"):
        parse_band("0.9:0.1")
    with pytest.raises(ValueError, match="expected LO:HI"):
        parse_band("half")
    rows = histogram([Difficulty(str(i), r, None, 2) for i, r in enumerate([0, 0.5, 0.5, 1])], 2).splitlines()
    assert rows[1:] == [
        "      0/2        1  ####################",
        "      1/2        2  ########################################",
        "      2/2        1  ####################",
    ]
