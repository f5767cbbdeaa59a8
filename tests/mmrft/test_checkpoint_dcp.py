"""Sharded checkpoints (torch.distributed.checkpoint) under FSDP2: each rank writes its own shards, and a
checkpoint written on 2 processes resumes on 1 and one written on 1 resumes on 2 (torchrun, gloo, CPU)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from mmrft.config import load_config, to_dict
from mmrft.tracking import read_jsonl
from mmrft.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"


def _overrides(run: Path, tiny_model_dir, shapes_dir) -> list[str]:
    return [
        f"model.path={tiny_model_dir}", f"train.output_dir={run}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        "grpo.steps=3", "train.save_every=1", "train.keep_last=0", "rollout.group_size=4",
        "rollout.max_completion_length=8", "train.prompts_per_step=4", "train.micro_batch_size=4",
        "train.lr=1e-3", "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=4", "eval.batch_size=2", f"rewards=[{{name: '{PLUGIN}'}}, accuracy]",
    ]  # fmt: skip


def _torchrun(overrides: list[str], resume: bool = False) -> None:
    """``mmrft train`` on 2 processes with exactly the config ``load_config(None, overrides)`` gives here."""
    cfg = load_config(None, overrides)
    path = Path(cfg.train.output_dir).with_name(Path(cfg.train.output_dir).name + ".yaml")
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "mmrft.train", "--config", str(path), *(["--resume"] if resume else [])]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _cut_back_to(run: Path, step: int) -> None:
    """What a crash right after checkpoint ``step`` leaves (later checkpoints and the outputs gone)."""
    for p in (run / "checkpoints").glob("step_*"):
        if int(p.name.removeprefix("step_")) > step:
            shutil.rmtree(p)
    shutil.rmtree(run / "final")
    (run / "summary.json").unlink()


def _close(a: Path, b: Path) -> None:
    wa, wb = (
        load_file(str(a / "final" / "model.safetensors")),
        load_file(str(b / "final" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys()
    for (
        k
    ) in wa:  # FSDP reduces in another order than one process: compare whole tensors (see test_distributed)
        rel = float((wa[k].float() - wb[k].float()).norm() / wa[k].float().norm().clamp(min=1e-12))
        assert rel < 1e-3, (k, rel)


def _step_rows(run: Path) -> list[dict]:
    return [r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r]


def _same_steps(a: Path, b: Path) -> None:
    ra, rb = _step_rows(a), _step_rows(b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] == [0, 1, 2]
    for x, y in zip(ra, rb):  # same weights, same sampling seeds: the same completions and rewards
        assert x["reward"] == pytest.approx(y["reward"], abs=1e-6)
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)


@pytest.mark.slow
def test_two_process_sharded_checkpoints_resume_on_one_process(tmp_path, tiny_model_dir, shapes_dir):
    two = tmp_path / "two"
    _torchrun(_overrides(two, tiny_model_dir, shapes_dir))
    ckpt = two / "checkpoints" / "step_0000003"
    man = json.loads((ckpt / "manifest.json").read_text())
    assert man["layout"] == "sharded" and man["world_size"] == 2
    assert not (ckpt / "model.pt").exists() and "dcp/.metadata" in man["files"]
    shards = [man["files"][f"dcp/__{r}_0.distcp"]["size"] for r in (0, 1)]
    assert max(shards) < 0.75 * sum(shards)  # each rank wrote its own half: nothing was gathered to rank 0

    # the final checkpoint, loaded on one process, is exactly the weights the two processes exported
    exact = tmp_path / "exact"
    shutil.copytree(two, exact)
    shutil.rmtree(exact / "final")
    cfg = load_config(None, _overrides(exact, tiny_model_dir, shapes_dir))
    trainer = Trainer(cfg, resume=True)
    assert trainer.state["step"] == 3 and trainer.info.world_size == 1
    trainer.run()  # nothing left to train: re-exports final/ from the loaded weights
    wa, wb = (
        load_file(str(two / "final" / "model.safetensors")),
        load_file(str(exact / "final" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)

    # resumed after GRPO step 1 on one process, the run follows the two-process one
    one = tmp_path / "one"
    shutil.copytree(two, one)
    _cut_back_to(one, 1)
    Trainer(load_config(None, _overrides(one, tiny_model_dir, shapes_dir)), resume=True).run()
    _same_steps(two, one)
    _close(two, one)
    assert (
        json.loads((one / "checkpoints" / "step_0000002" / "manifest.json").read_text())["layout"] == "full"
    )


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["sharded", "full"])
def test_one_process_checkpoints_resume_on_two_processes(tmp_path, tiny_model_dir, shapes_dir, layout):
    one = tmp_path / "one"
    Trainer(
        load_config(None, [*_overrides(one, tiny_model_dir, shapes_dir), f"train.checkpoint_format={layout}"])
    ).run()
    man = json.loads((one / "checkpoints" / "step_0000001" / "manifest.json").read_text())
    assert man["layout"] == layout and man["world_size"] == 1
    two = tmp_path / "two"
    shutil.copytree(one, two)
    _cut_back_to(two, 1)
    _torchrun(
        [*_overrides(two, tiny_model_dir, shapes_dir), f"train.checkpoint_format={layout}"], resume=True
    )
    _same_steps(one, two)
    _close(one, two)
    man = json.loads((two / "checkpoints" / "step_0000002" / "manifest.json").read_text())
    assert man["layout"] == layout and man["world_size"] == 2
    assert json.loads((two / "summary.json").read_text())["world_size"] == 2
