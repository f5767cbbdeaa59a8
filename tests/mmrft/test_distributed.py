"""Data-parallel training under torchrun (FSDP2 on CPU with gloo) follows the one-process run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"


def _config(tmp_path, tiny_model_dir, shapes_dir) -> Path:
    cfg = {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train_file": str(shapes_dir / "classification_train.jsonl"),
                 "eval_file": str(shapes_dir / "classification_heldout.jsonl")},
        "rollout": {"group_size": 4, "max_completion_length": 8},
        "grpo": {"steps": 3, "beta": 0.1, "num_iterations": 2},
        "rewards": [{"name": PLUGIN}, {"name": "accuracy"}],
        "train": {"prompts_per_step": 4, "micro_batch_size": 4, "lr": 1e-3, "progress_bar": False,
                  "tensorboard": False, "plot": False},
        "eval": {"max_samples": 6, "batch_size": 2},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve(tmp_path, tiny_model_dir, shapes_dir):
    cfg = _config(tmp_path, tiny_model_dir, shapes_dir)
    one, two = tmp_path / "one", tmp_path / "two"
    _run([sys.executable, "-m", "mmrft.train", "--config", str(cfg), f"train.output_dir={one}"])
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmrft.train",
          "--config", str(cfg), f"train.output_dir={two}"])  # fmt: skip
    a, b = _rows(one), _rows(two)
    steps_a = [r for r in a if "loss" in r]
    steps_b = [r for r in b if "loss" in r]
    assert len(steps_a) == len(steps_b) == 3
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    for ra, rb in zip(steps_a, steps_b):
        # same global batch, per-prompt sampling seeds: the same completions and rewards on both
        assert ra["reward"] == pytest.approx(rb["reward"], abs=1e-6)
        assert ra["completion_len"] == pytest.approx(rb["completion_len"], abs=1e-6)
        assert ra["loss"] == pytest.approx(rb["loss"], abs=1e-5)
        assert ra["kl"] == pytest.approx(rb["kl"], abs=1e-6)
        assert ra["grad_norm"] == pytest.approx(rb["grad_norm"], rel=1e-4)
    assert any(r["kl"] > 0 for r in steps_a[1:])  # the KL term is live, so the loss is not trivially 0
    wa = load_file(str(one / "final" / "model.safetensors"))
    wb = load_file(str(two / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        # Adam divides by sqrt(v): a gradient of +-1e-9 on one element moves it by +-lr either way, so
        # compare whole tensors, not elements: float noise from a different reduction order stays tiny
        rel = float((wa[k].float() - wb[k].float()).norm() / wa[k].float().norm().clamp(min=1e-12))
        assert rel < 1e-3, (k, rel)
