"""Two processes under torchrun (gloo on CPU) give the same metrics as one: records are split over
ranks, sampling is seeded per record, and every metric is computed after the results are gathered."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mmrft.cli import main

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"


def _torchrun(*args: str) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmrft",
           "eval", *args]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _load(out: Path):
    ev = json.loads((out / "eval.json").read_text())
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return ev, rows


def _same_metrics(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-9), k


@pytest.mark.slow
def test_generation_on_two_processes_gives_the_one_process_metrics(tmp_path, tiny_model_dir, shapes_dir):
    # 15 records, records 1, 3 and 5 corrupt: rank 1 (records 1, 3, 5, ...) has a first batch with nothing
    # to generate for, and still keeps step with rank 0
    recs = [
        json.loads(x) for x in (shapes_dir / "classification_heldout.jsonl").read_text().splitlines()[:15]
    ]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    for i, r in enumerate(recs):
        r["images"] = [str(tmp_path / "bad.png") if i in (1, 3, 5) else str(shapes_dir / r["images"][0])]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs))
    common = ["--model", str(tiny_model_dir), "--data", str(data), "--k", "2", "--temperature", "1.0"]
    overrides = [f"rewards=[format, accuracy, {{name: '{PLUGIN}'}}]", "rollout.max_completion_length=6",
                 "eval.batch_size=3"]  # fmt: skip
    assert main(["eval", *common, "--out", str(tmp_path / "one"), *overrides]) == 0
    _torchrun(*common, "--out", str(tmp_path / "two"), *overrides)
    one, rows_one = _load(tmp_path / "one")
    two, rows_two = _load(tmp_path / "two")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert one["records"] == two["records"] and one["records"]["load_failed"] == 3
    _same_metrics(one["metrics"], two["metrics"])
    assert 0 < one["metrics"]["reward/length_reward"] < 1  # a live number, not a constant
    assert [r["id"] for r in rows_one] == [r["id"] for r in rows_two]  # file order, not rank order
    assert [r.get("completions") for r in rows_one] == [r.get("completions") for r in rows_two]


@pytest.mark.slow
def test_scoring_predictions_on_two_processes_gives_the_one_process_coco_numbers(tmp_path):
    from test_eval_coco import _dataset

    data, preds, _, _ = _dataset(tmp_path)
    common = ["--predictions", str(preds), "--data", str(data), "eval.batch_size=5"]
    assert main(["eval", "--out", str(tmp_path / "one"), *common]) == 0
    _torchrun("--out", str(tmp_path / "two"), *common)
    one, rows_one = _load(tmp_path / "one")
    two, rows_two = _load(tmp_path / "two")
    _same_metrics(one["metrics"], two["metrics"])
    assert one["metrics"]["detection/AP"] > 0.1
    assert rows_one == rows_two
