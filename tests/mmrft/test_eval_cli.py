"""`mmrft eval --model` on the tiny model: outputs, decoding settings, K samples, bad records counted,
`mmrft eval compare`; the trainer's summary holds the same metrics."""

import json

import pytest

from mmrft.cli import main

REWARDS = "rewards=[format, accuracy]"


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory, shapes_dir):
    """8 classification records, one with a missing image and one with a corrupt one (counted, not fatal)."""
    lines = (shapes_dir / "classification_heldout.jsonl").read_text().splitlines()[:8]
    d = tmp_path_factory.mktemp("mixed")
    recs = [json.loads(x) for x in lines]
    for r in recs:
        r["images"] = [str(shapes_dir / r["images"][0])]
    recs[2]["images"] = [str(d / "missing.png")]
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    recs[5]["images"] = [str(d / "corrupt.png")]
    path = d / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path, [r["id"] for r in recs]


def _eval(tmp_path, tiny_model_dir, data, name, *extra):
    out = tmp_path / name
    opts = [x for x in extra if "=" not in x]  # options first: argparse takes the positionals in one run
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(data), "--out", str(out), *opts, REWARDS,
                 "rollout.max_completion_length=6", *[x for x in extra if "=" in x]])  # fmt: skip
    assert code == 0
    rows = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    return out, json.loads((out / "eval.json").read_text()), rows


def test_eval_writes_every_output_and_counts_bad_records(tmp_path, tiny_model_dir, mixed_file, capsys):
    data, ids = mixed_file
    out, ev, rows = _eval(tmp_path, tiny_model_dir, data, "a")
    assert ev["decoding"] == {"mode": "greedy", "k": 1, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
                              "max_new_tokens": 6, "seed": 0}  # fmt: skip
    assert ev["model"] == str(tiny_model_dir) and ev["data"] == str(data)
    assert ev["records"]["evaluated"] == 8 and ev["records"]["ok"] == 6 and ev["records"]["load_failed"] == 2
    assert {f["id"] for f in ev["failures"]} == {ids[2], ids[5]}
    assert "missing.png" in next(f["error"] for f in ev["failures"] if f["id"] == ids[2])
    m = ev["metrics"]
    assert m["n"] == 8.0 and m["classification/failed_rate"] == pytest.approx(2 / 8)
    assert m["classification/accuracy"] == 0.0  # an untrained tiny model does not name the shape
    assert set(m) >= {
        "reward",
        "reward/format",
        "reward/accuracy",
        "completion_len",
        "truncated_frac",
        "pass@1",
    }
    assert [r["id"] for r in rows] == ids and rows[2]["status"] == "load_failed"
    ok = rows[0]
    assert len(ok["completions"]) == 1 and ok["scores"][0]["tokens"] <= 6
    assert set(ok["scores"][0]["rewards"]) == {"format", "accuracy"} and "correct" in ok["scores"][0]
    assert (out / "eval.md").read_text().startswith("# mmrft eval")
    printed = capsys.readouterr().out
    assert "| classification/accuracy | 0.0000 |" in printed and "decoding: greedy" in printed


def test_k_samples_are_seeded_per_record_and_compare_shows_the_difference(
    tmp_path, tiny_model_dir, shapes_dir, capsys
):
    data = shapes_dir / "classification_heldout.jsonl"
    a, ev_a, rows_a = _eval(tmp_path, tiny_model_dir, data, "k3", "--k", "3", "--temperature", "1.0",
                            "--limit", "5", "eval.batch_size=2")  # fmt: skip
    _, _, rows_b = _eval(tmp_path, tiny_model_dir, data, "k3b", "--k", "3", "--temperature", "1.0",
                         "--limit", "5", "eval.batch_size=5")  # fmt: skip
    assert ev_a["decoding"]["mode"] == "sampled" and ev_a["decoding"]["k"] == 3
    assert ev_a["records"]["evaluated"] == 5 and "pass@3" in ev_a["metrics"]
    assert all(len(r["completions"]) == 3 for r in rows_a)
    assert len({c for r in rows_a for c in r["completions"]}) > 5  # sampled: the 15 are not all alike
    # the noise of a record depends on the record only, not on which records share its batch
    assert [r["completions"] for r in rows_a] == [r["completions"] for r in rows_b]
    g, _, _ = _eval(tmp_path, tiny_model_dir, data, "greedy", "--limit", "5")
    capsys.readouterr()
    assert main(["eval", "compare", str(g), str(a)]) == 0
    table = capsys.readouterr().out
    assert "note: the decoding settings differ" in table
    assert "| pass@3 | n/a |" in table and "| completion_chars |" in table and "B - A" in table


def test_bad_invocations_fail_with_one_line(tmp_path, tiny_model_dir, shapes_dir, capsys):
    data = str(shapes_dir / "classification_heldout.jsonl")
    assert main(["eval", "--model", str(tiny_model_dir), "--data", data, "--k", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmrft eval: error: eval.k=2 with eval.temperature=0.0") and "\n" not in err
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "a", "completion": "x"}\n{"id": "a", "completion": "y"}\n')
    assert main(["eval", "--predictions", str(dup), "--data", data]) == 1
    assert capsys.readouterr().err.strip() == f"mmrft eval: error: {dup}:2: id 'a' appears twice"
    assert main(["eval", "compare", str(tmp_path)]) == 1
    assert "usage: mmrft eval compare DIR_A DIR_B" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path), str(tmp_path)]) == 1
    assert "no eval.json here" in capsys.readouterr().err


def test_trainer_summary_holds_the_task_metrics(tmp_path, tiny_model_dir, shapes_dir):
    from mmrft.config import load_config
    from mmrft.trainer import train

    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}", f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=2", "rollout.max_completion_length=4", "train.prompts_per_step=2",
        "train.micro_batch_size=4", "grpo.steps=2", "train.eval_every=1", "eval.max_samples=3",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false", REWARDS,
    ])  # fmt: skip
    summary = train(cfg)
    for key in ("eval_before", "eval_after"):
        ev = summary[key]
        assert ev["n"] == 3.0 and "classification/accuracy" in ev and "reward/accuracy" in ev
    run = tmp_path / "run"
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if "eval/classification/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 1, 2]  # before, eval_every=1, at the end
    assert all("eval_reward" in r for r in evals)
    for tag in ("before", "step_1", "after"):
        assert json.loads((run / "eval" / tag / "eval.json").read_text())["records"]["evaluated"] == 3
    after = json.loads((run / "eval" / "after" / "eval.json").read_text())
    assert after["metrics"] == summary["eval_after"]
