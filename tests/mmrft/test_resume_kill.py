"""SIGKILL a real `mmrft train` process at seeded random points, mid-model_init, mid-checkpoint and
mid-export included, resume each time, and get exactly the uninterrupted run: the same final weights,
metrics.jsonl and samples.jsonl (step_time and the mem/* peaks, measurements, left out of the comparison)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmrft.tracking import read_jsonl

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"


def _config(tmp_path: Path) -> Path:
    cfg = {
        "model": {"tiny": "tiny"},  # built by the run into model_init: a kill can land mid-build
        "data": {"synthetic": {"n_train": 16, "n_eval": 4, "sft_examples": 8}},
        "sft": {"steps": 1, "batch_size": 4},
        "grpo": {"steps": 3},
        "rollout": {"group_size": 4, "max_completion_length": 6},
        "rewards": [{"name": PLUGIN}, {"name": "accuracy"}],
        "train": {"prompts_per_step": 4, "micro_batch_size": 16, "lr": 1e-3, "save_every": 1, "sample_every": 1,
                  "eval_every": 2, "progress_bar": False, "tensorboard": False, "plot": True},
        "eval": {"max_samples": 4, "batch_size": 4},
    }  # fmt: skip
    path = tmp_path / "cfg.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _launch(cfg: Path, run: Path, log: Path) -> subprocess.Popen:
    resume = any(p.name.startswith("step_") for p in (run / "checkpoints").glob("step_*"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "mmrft.train", "--config", str(cfg), f"train.output_dir={run}"]
    return subprocess.Popen(cmd + (["--resume"] if resume else []), stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"), env=env, cwd=ROOT)  # fmt: skip


def _rows(path: Path) -> list[dict]:
    return [
        {k: v for k, v in r.items() if k != "step_time" and not k.startswith("mem/")}
        for r in read_jsonl(path)
    ]


def _kill_when(proc: subprocess.Popen, fired, delay: float = 0.0, timeout: float = 300) -> bool:
    """SIGKILL ``proc`` once ``fired()`` holds (after ``delay`` s); False if it exited first."""
    end = time.time() + timeout
    while proc.poll() is None and time.time() < end:
        if fired():
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.0005)
    assert proc.poll() is not None, "the run neither finished nor reached the kill point"
    return False


@pytest.mark.slow
def test_sigkill_anywhere_then_resume_gives_the_uninterrupted_run(tmp_path):
    cfg = _config(tmp_path)
    whole, run, log = tmp_path / "whole", tmp_path / "run", tmp_path / "stderr.txt"
    ref = _launch(cfg, whole, log)
    assert ref.wait(timeout=300) == 0, log.read_text()[-3000:]
    rng = random.Random(0)

    def rows_grew_by(k):
        start = len(read_jsonl(run / "metrics.jsonl"))
        return lambda: len(read_jsonl(run / "metrics.jsonl")) >= start + k

    checkpoints = run / "checkpoints"
    k, delay = rng.randint(1, 4), rng.uniform(0.0, 0.05)  # the random kill: k rows into a run, then a bit
    plan = [  # (what, the kill condition, made when the process starts; delay after it holds)
        ("mid-model_init", lambda: lambda: (run / ".model_init.tmp").exists(), 0.0),
        ("during a step", lambda: rows_grew_by(k), delay),
        ("mid-checkpoint", lambda: lambda: any(checkpoints.glob(".step_*.tmp")), 0.0),
        ("mid-export", lambda: lambda: (run / ".final.tmp").exists(), 0.0),
    ]
    hits = []
    for name, condition, delay in plan:
        fired = condition()
        if _kill_when(_launch(cfg, run, log), fired, delay):
            left = {p.name for p in [*run.glob(".*"), *checkpoints.glob(".*")]}  # what was cut off mid-write
            hits.append((name, sorted(left)))
    last = _launch(cfg, run, log)
    assert last.wait(timeout=300) == 0, log.read_text()[-3000:]
    assert [h[0] for h in hits] == [p[0] for p in plan], (hits, log.read_text()[-3000:])
    # the folder-level kills really landed while the folder was being written
    assert ".model_init.tmp" in hits[0][1] and any(n.startswith(".step_") for n in hits[2][1]), hits
    assert ".final.tmp" in hits[3][1], hits

    wa, wb = (
        load_file(str(whole / "final" / "model.safetensors")),
        load_file(str(run / "final" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)
    assert _rows(run / "metrics.jsonl") == _rows(whole / "metrics.jsonl")
    assert _rows(run / "samples.jsonl") == _rows(whole / "samples.jsonl")
    assert len([r for r in _rows(run / "metrics.jsonl") if "loss" in r]) == 4  # 1 SFT + 3 GRPO, once each
    a, b = (json.loads((d / "summary.json").read_text()) for d in (whole, run))
    assert a["eval_before"] == b["eval_before"] and a["eval_after"] == b["eval_after"]
    assert (run / "reward_curve.png").is_file()
    err = log.read_text()
    assert "resume: resuming checkpoints/step_" in err and "Traceback" not in err
