"""Demo fixtures: an image whose object position is known, the tiny model loaded for the demo, a short
training run, and the app itself started by `mmrft demo` (for the API and browser tests)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from demo_helpers import ROOT, SQUARE
from PIL import Image


@pytest.fixture(scope="session")
def square_png(tmp_path_factory) -> Path:
    from data_pipelines.synthetic.draw import draw_shape

    image = Image.new("RGB", (150, 100), (255, 255, 255))
    assert draw_shape(image, "square", "red", 30, 20, 60) == SQUARE
    path = tmp_path_factory.mktemp("demo_inputs") / "square.png"
    image.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_demo(tiny_model_dir):
    from mmrft.demo.engine import DemoSettings, load_demo_model
    from mmrft.demo.handlers import Demo

    settings = DemoSettings()
    return Demo([load_demo_model(tiny_model_dir, "tuned", torch.device("cpu"), settings)], settings)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory, shapes_dir, tiny_model_dir) -> Path:
    """Two GRPO steps of the tiny model on synthetic grounding: samples.jsonl, metrics.jsonl, config.yaml."""
    from mmrft.config import load_config
    from mmrft.trainer import train

    run = tmp_path_factory.mktemp("demo_run") / "run"
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", f"data.train_file={shapes_dir / 'grounding_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'grounding_train.jsonl'}", f"train.output_dir={run}",
        "rollout.group_size=4", "rollout.max_completion_length=8", "train.prompts_per_step=4",
        "train.micro_batch_size=8", "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=4", "eval.batch_size=4", "grpo.steps=2", "train.sample_every=1", "rewards=[iou, {name: format, params: {structure: answer_only}}]",
    ])  # fmt: skip
    train(cfg)
    return run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def demo_server(tmp_path_factory, tiny_model_dir, demo_run):
    """`mmrft demo --model TINY --base TINY --run RUN` serving on a free port; yields its URL."""
    pytest.importorskip("gradio", reason="the demo needs gradio: pip install -e '.[demo]'")
    log = tmp_path_factory.mktemp("demo_server") / "server.log"
    cmd = [sys.executable, "-m", "mmrft", "demo", "--model", str(tiny_model_dir), "--base", str(tiny_model_dir),
           "--run", str(demo_run), "--port", str(_free_port()), "--threads", "1"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
    url, t0 = None, time.time()
    while url is None and time.time() - t0 < 180 and proc.poll() is None:
        time.sleep(0.5)
        m = re.search(r"serving on (http://\S+)", log.read_text())
        url = m.group(1) if m else None
    if url is None:
        proc.kill()
        pytest.fail(
            f"`mmrft demo` did not start in 180 s (exit {proc.poll()}); log:\n{log.read_text()[-3000:]}"
        )
    print(f"demo started in {time.time() - t0:.1f} s at {url} (log {log})")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
