"""Data-parallel training under torchrun (FSDP2 on CPU with gloo) follows the one-process run."""

import json
import socket
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


# rank-local by nature: the wall time and each process's own memory (a max over ranks, of smaller shards)
LOCAL = ("step_time", "mem/")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_model_dir, shapes_dir) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("dist")
    cfg = _config(tmp, tiny_model_dir, shapes_dir)
    _run([sys.executable, "-m", "mmrft.train", "--config", str(cfg), f"train.output_dir={tmp / 'one'}"])
    return cfg, tmp / "one"


def _assert_same_metrics(one: Path, two: Path) -> list[dict]:
    """Every step metric of the two-process run equals the one-process run's (the same global batch)."""
    steps_a = [r for r in _rows(one) if "loss" in r]
    steps_b = [r for r in _rows(two) if "loss" in r]
    assert len(steps_a) == len(steps_b) == 3
    for ra, rb in zip(steps_a, steps_b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if k in ("step", "stage") or k.startswith(LOCAL):
                continue
            tol = {"rel": 1e-4} if "grad_norm" in k else {"abs": 1e-5}  # a different reduction order
            assert ra[k] == pytest.approx(rb[k], **tol), (ra["step"], k, ra[k], rb[k])
    # the metrics that used to be rank-local or dropped are there
    want = {"completion_len", "truncated_frac", "zero_std_frac", "reward/length_reward", "tokens",
            "adv_abs_mean", "adv_abs_max", "pass1/loss", "pass2/clip_frac", "pass1/grad_norm",
            "mem/rollout_peak_mib", "mem/reference_peak_mib", "mem/update_peak_mib"}  # fmt: skip
    assert want <= steps_b[0].keys()
    assert steps_b[0]["pass2/loss"] == steps_b[0]["loss"]
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
    mem_a = json.loads((one / "memory.json").read_text())
    mem_b = json.loads((two / "memory.json").read_text())
    assert [r["rank"] for r in mem_b] == [0, 1]
    # FSDP2: each rank holds a shard; together the whole model once
    assert sum(r["parameters"] for r in mem_b) == mem_a[0]["parameters"]
    assert all(r["parameters"] < mem_a[0]["parameters"] for r in mem_b)
    return steps_a


@pytest.mark.slow
def test_two_processes_follow_the_one_process_curve(tmp_path, one_process):
    cfg, one = one_process
    two = tmp_path / "two"
    _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "mmrft.train",
          "--config", str(cfg), f"train.output_dir={two}"])  # fmt: skip
    steps_a = _assert_same_metrics(one, two)
    assert any(r["kl"] > 0 for r in steps_a[1:])  # the KL term is live, so the loss is not trivially 0
    _assert_same_weights(one, two)


@pytest.mark.slow
def test_accelerate_launch_runs_like_torchrun(tmp_path, one_process):
    """`accelerate launch --multi_gpu --num_processes 2` is torchrun's launcher under accelerate's name: on
    CPU it starts two processes with RANK / WORLD_SIZE / LOCAL_RANK set, and mmrft runs on gloo."""
    pytest.importorskip("accelerate")
    cfg, one = one_process
    two = tmp_path / "two"
    _run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
          str(_free_port()), "-m", "mmrft.train", "--config", str(cfg), f"train.output_dir={two}"])  # fmt: skip
    _assert_same_metrics(one, two)
    _assert_same_weights(one, two)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _assert_same_weights(one: Path, two: Path) -> None:
    wa = load_file(str(one / "final" / "model.safetensors"))
    wb = load_file(str(two / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        # Adam divides by sqrt(v): a gradient of +-1e-9 on one element moves it by +-lr either way, so
        # compare whole tensors, not elements: float noise from a different reduction order stays tiny
        rel = float((wa[k].float() - wb[k].float()).norm() / wa[k].float().norm().clamp(min=1e-12))
        assert rel < 1e-3, (k, rel)
