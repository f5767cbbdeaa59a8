"""Rollouts and Curves: a run's logs read defensively (nan strings, nulls, a half-written line, a
resumed run that logs a step again), grouped, filtered, and drawn from a real training run."""

import json

import pytest

from mmrft.demo.browse import RunRecords, curves_figure, curves_view, rollouts_view
from mmrft.demo.runs import RunError, filter_groups, load_curves, load_rollouts, number


def _write(path, rows, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def test_logged_values_are_read_defensively():
    assert [number(v) for v in (1, 2.5, "0.25", " 3 ", "nan", "inf", "-Infinity", None, True, "x", [1])] == [
        1.0, 2.5, 0.25, 3.0, None, None, None, None, None, None, None,
    ]  # fmt: skip
    assert number(float("nan")) is None and number(float("inf")) is None


def test_curves_keep_the_last_value_of_a_step_and_skip_what_cannot_be_read(tmp_path):
    _write(tmp_path / "metrics.jsonl", [
        {"step": 0, "stage": "sft", "loss": 2.0},
        {"step": 0, "stage": "grpo", "reward": 0.1, "kl": None, "clip_frac": "nan"},
        {"step": 1, "stage": "grpo", "reward": 0.2, "kl": 0.01},
        {"step": 1, "stage": "grpo", "reward": 0.3, "kl": "0.02"},  # the resumed run logged step 1 again
        {"step": 2, "stage": "grpo", "eval_reward": 0.5, "eval/grounding/acc@0.5": 0.25},
        {"stage": "grpo", "reward": 9.0},  # no step
    ], tail='{"step": 3, "stage": "grpo", "rew')  # fmt: skip
    curves = load_curves(tmp_path)
    assert curves.get("grpo", "reward") == [(0, 0.1), (1, 0.3)]
    assert curves.get("grpo", "kl") == [(1, 0.02)]
    assert curves.get("grpo", "clip_frac") == []
    assert curves.get("sft", "loss") == [(0, 2.0)]
    assert curves.metrics("eval") == [("grpo", "eval/grounding/acc@0.5"), ("grpo", "eval_reward")]
    assert curves.bad_lines == 2 and curves.rows == 6
    assert curves.latest()["grpo/reward"] == 0.3
    fig = curves_figure(curves)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes][:2] == ["reward", "KL to the reference"] and len(axes) == 6
    assert len(axes[0].get_lines()) == 2  # train reward and eval_reward
    assert curves_view(tmp_path).markdown == "6 logged rows; GRPO steps 0-1; 2 unreadable line(s) skipped"


def _rows(step, rid, rewards, text="x"):
    return [{"step": step, "id": rid, "prompt": f"p {rid}", "completion": f"{text}{k}", "solution": {"label": "a"},
             "reward": r, "rewards": {"accuracy": r}, "advantage": "nan" if r is None else r - 0.5}
            for k, r in enumerate(rewards)]  # fmt: skip


def test_rollouts_group_by_step_and_prompt_and_filter_by_reward(tmp_path):
    rows = _rows(0, "a", [1.0, 0.0]) + _rows(0, "b", [0.0, None])
    rows += _rows(1, "a", [0.0, 0.0], "old") + _rows(2, "c", [1.0, 1.0]) + _rows(1, "a", [1.0, 0.0], "new")
    _write(tmp_path / "samples.jsonl", rows, tail='{"step": 2, "id": "c", "compl')
    log = load_rollouts(tmp_path)
    assert log.steps == [0, 1, 2] and log.bad_lines == 1
    assert [(g.id, len(g.completions)) for g in log.groups[0]] == [("a", 2), ("b", 2)]
    assert [c.text for c in log.groups[1][0].completions] == ["new0", "new1"]  # the later block of step 1
    b = log.groups[0][1].completions
    assert (b[1].reward, b[1].advantage, b[0].advantage) == (None, None, -0.5)
    kept = filter_groups(log.groups[0], 0.5, None)
    assert [(g.id, [c.index for c in g.completions]) for g in kept] == [("a", [0])]
    assert [len(g.completions) for g in filter_groups(log.groups[0], None, 0.5)] == [1, 1]
    assert [len(g.completions) for g in filter_groups(log.groups[0], None, None)] == [2, 2]
    view = rollouts_view(tmp_path, None, None, None, None)
    assert (
        view.step == 2
        and view.summary
        == "step 2: 2 of 2 completions in the reward range, 1 prompt(s) · 1 unreadable line(s) skipped"
        and view.pictures == []
    )


def test_a_run_without_samples_says_so(tmp_path):
    assert "run directory not found" in rollouts_view(tmp_path / "nope", None, None, None, None).error
    assert f"{tmp_path} has no samples.jsonl yet" in rollouts_view(tmp_path, None, None, None, None).error
    (tmp_path / "samples.jsonl").write_text("\n{not json\n")
    assert (
        "holds no completions yet (1 unreadable line(s))"
        in rollouts_view(tmp_path, 0, None, None, None).error
    )
    assert "no run directory" in curves_view("  ").error
    assert (
        rollouts_view(tmp_path, 0, "high", None, None).error
        == "min reward: expected a number (or nothing), got 'high'"
    )
    with pytest.raises(RunError, match="has no metrics.jsonl yet"):
        load_curves(tmp_path)


def test_rollouts_of_a_real_run_are_parsed_and_drawn_in_original_pixels(demo_run):
    records = RunRecords(demo_run)
    assert records.note == "" and len(records.index) == 16
    view = rollouts_view(demo_run, 1, None, None, records)
    assert view.error == "" and view.steps == [0, 1] and view.step == 1
    groups = view.data["groups"]
    assert len(groups) == 2 and all(len(g["completions"]) == 4 for g in groups)  # 2 prompts x G 4 logged
    assert (
        view.markdown.count("| 4 |") == 2
        and "| # | reward | advantage | format | iou | completion |" in view.markdown
    )
    assert len(view.pictures) == 2
    pic, caption = view.pictures[0]
    assert pic.width == 112 and caption.startswith(f"step 1 · {groups[0]['id']}")  # the 112 px original
    curves = curves_view(demo_run)
    assert curves.error == "" and curves.latest["grpo/reward"] is not None


def test_a_logged_box_is_drawn_on_its_record_in_original_pixels(demo_run, tmp_path):
    import shutil

    from mmrft.demo.drawing import TRUTH_COLOR, color_of

    shutil.copy(demo_run / "config.yaml", tmp_path / "config.yaml")  # names the run's training records
    records = RunRecords(tmp_path)
    rid, j = next(iter(records.index.items()))
    x1, y1, x2, y2 = records.dataset.records[j]["solution"]["box"]  # 112 px images: model frame = original
    hit = "<answer>" + json.dumps({"bbox_2d": [x1 + 4, y1 + 4, x2 - 4, y2 - 4]}) + "</answer>"
    _write(tmp_path / "samples.jsonl", [
        {"step": 5, "id": rid, "prompt": "p", "completion": hit, "reward": 0.6, "advantage": 0.5},
        {"step": 5, "id": rid, "prompt": "p", "completion": "nothing", "reward": 0.0, "advantage": -0.5},
    ])  # fmt: skip
    view = rollouts_view(tmp_path, 5, None, None, records)
    pic, caption = view.pictures[0]
    assert caption == f"step 5 · {rid} · best reward 0.600"
    assert pic.getpixel((int(x1) + 4, int(y1 + y2) // 2)) == color_of(0)  # completion #1's left edge
    assert pic.getpixel((int(x1), int(y1 + y2) // 2)) == TRUTH_COLOR  # the truth's, 4 px further out
    only_hits = rollouts_view(tmp_path, 5, 0.5, None, records)
    assert [c["index"] for c in only_hits.data["groups"][0]["completions"]] == [0]
