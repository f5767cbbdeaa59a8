"""The synthetic chart-to-code task trains end to end with chart_render on the tiny model (CPU, seconds).

The tiny model writes bytes, not matplotlib, so every completion fails in the sandbox; the test checks the
wiring: the trainer calls the reward through the registry with the config's params, every completion is
scored 0 and counted by failure reason, no step waits on the sandbox longer than the render timeout allows,
and the run finishes with its summary.
"""

from __future__ import annotations

import json

import pytest

from rewards.chart import reward as chart_reward  # noqa: F401 - registers chart_render until builtin.py does

pytest.importorskip("mmrft.trainer")


def test_tiny_model_trains_three_steps_on_synthetic_charts_with_chart_render(tmp_path, tiny_model_dir):
    from data_pipelines.synthetic.charts import write_chart_dataset
    from mmrft.config import load_config
    from mmrft.trainer import train

    train_file = write_chart_dataset(tmp_path / "charts", n=6, seed=0, split="train", dpi=32)
    params = "{timeout_s: 2.0, memory_mb: 512, workers: 2, width_px: 96, height_px: 72, dpi: 24}"
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={train_file}",
        "data.max_pixels=12544",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=4", "rollout.max_completion_length=16",
        "train.prompts_per_step=2", "train.micro_batch_size=8",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "grpo.steps=3",
        f"rewards=[{{name: chart_render, weight: 1.0, params: {params}}}]",
    ])  # fmt: skip
    summary = train(cfg)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r.get("stage") == "grpo" and "loss" in r]
    assert len(grpo) == 3 and "wall_seconds" in summary
    for r in grpo:
        assert r["reward/chart_render"] == 0.0  # byte soup never renders the reference chart
        fails = sum(
            v
            for k, v in r.items()
            if k.startswith("reward/chart_render/fail/") and k != "reward/chart_render/fail/reference"
        )
        assert fails == 2 * 4  # every completion of the step counted under one reason
        assert r["reward/chart_render/fail/reference"] == 0.0  # the generator's code renders in the sandbox
