"""`mmrft ...` prints ONE line (and exits non-zero) for every user error, the traceback only under
--debug; an unexpected exception (a bug) keeps its traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmrft.cli import main

PLUGINS = str(Path(__file__).with_name("guard_plugins.py"))
ROOT = str(Path(__file__).resolve().parents[2])
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # subprocesses on a shared 2-core machine


def _mmrft(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmrft", *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=ENV)  # fmt: skip


def _one_line(proc: subprocess.CompletedProcess) -> str:
    """The error line: the last on stderr, with no traceback anywhere."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc.stderr.strip().splitlines()[-1]


def _train_args(tmp_path, tiny_model_dir, shapes_dir, *extra) -> list[str]:
    return [
        "train", f"train.output_dir={tmp_path / 'run'}", f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}", "data.eval_file=null", "model.tiny=null", "sft.steps=0", "grpo.steps=1",
        "rollout.group_size=4", "rollout.max_completion_length=4", "train.prompts_per_step=4",
        "train.micro_batch_size=8", "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        *extra,
    ]  # fmt: skip


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("model: {tiny: tiny}\ngrpo:\n  beta: [0.1\n")
    line = _one_line(_mmrft("train", "--config", str(f)))
    assert line.startswith(f"config error: config file '{f}': invalid YAML at line "), line


def test_duplicate_yaml_key_names_key_and_lines(tmp_path):
    f = tmp_path / "dup.yaml"
    f.write_text("model: {tiny: tiny}\ngrpo:\n  beta: 0.1\n  beta: 0.2\n")
    assert _one_line(_mmrft("train", "--config", str(f))) == (
        f"config error: config file '{f}': duplicate key 'beta' at line 4 (first given at line 3)"
    )


def test_out_of_range_override_names_field_and_range(tmp_path):
    assert _one_line(_mmrft("train", "rollout.temperature=-1", f"train.output_dir={tmp_path}")) == (
        "config error: rollout.temperature: must be >= 0, got -1.0"
    )


def test_debug_shows_the_traceback(tmp_path):
    proc = _mmrft("--debug", "train", "rollout.top_p=1.5", f"train.output_dir={tmp_path}")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().endswith("mmrft.config.ConfigError: rollout.top_p: must be in (0, 1], got 1.5")


def test_an_existing_run_dir_and_a_bad_checkpoint_are_one_line(tmp_path, tiny_model_dir, shapes_dir):
    args = _train_args(tmp_path, tiny_model_dir, shapes_dir)
    assert main(args) == 0  # a finished one-step run (it leaves its final checkpoint), in-process
    line = _one_line(_mmrft(*args))
    assert line.startswith(f"error: train.output_dir={str(tmp_path / 'run')!r} already holds checkpoints")
    for step_dir in (tmp_path / "run" / "checkpoints").glob("step_*"):
        (step_dir / "scheduler.pt").write_bytes(b"")  # every checkpoint damaged: nothing valid to resume
    line = _one_line(_mmrft(*args, "--resume"))
    assert line.startswith("resume error: no valid checkpoint to resume in "), line
    assert "scheduler.pt is 0 bytes" in line


@pytest.mark.parametrize(
    "case",
    ["record", "missing_train_file", "unknown_reward", "bad_reward_value"],
)
def test_errors_found_after_the_model_loads_are_one_line(tmp_path, tiny_model_dir, shapes_dir, case):
    if case == "record":
        bad = tmp_path / "bad.jsonl"
        first = (shapes_dir / "classification_train.jsonl").read_text().splitlines()[0]
        bad.write_text(first.replace('"images": ["', '"images": ["nope/') + "\n")
        extra, expect = [f"data.train_file={bad}"], "record error: "
        needle = f"{bad}:1: record 'shapes-classification-train-0-00000': file not found:"
    elif case == "missing_train_file":
        extra, expect = [f"data.train_file={tmp_path / 'nope.jsonl'}"], "error: "
        needle = f"dataset file not found: {tmp_path / 'nope.jsonl'}"
    elif case == "unknown_reward":
        extra, expect, needle = (
            ["rewards=[acuracy]"],
            "",
            "rewards[0].name: unknown reward 'acuracy'; available:",
        )
    else:
        extra, expect = [f"rewards=[{{name: '{PLUGINS}:inf_once'}}]"], "reward error: "
        needle = "reward 'inf_once' returned inf for record 'shapes-classification-train-0-"
    line = _one_line(_mmrft(*_train_args(tmp_path, tiny_model_dir, shapes_dir, *extra)))
    assert line.startswith(expect) and needle in line, line


def test_a_bug_keeps_its_traceback(tmp_path, tiny_model_dir, shapes_dir):
    proc = _mmrft(
        *_train_args(tmp_path, tiny_model_dir, shapes_dir, f"rewards=[{{name: '{PLUGINS}:buggy'}}]")
    )
    assert proc.returncode == 1
    assert (
        "Traceback (most recent call last)" in proc.stderr
        and "ZeroDivisionError: division by zero" in proc.stderr
    )


def test_user_errors_are_printed_by_main_and_others_propagate(monkeypatch, capsys):
    from mmrft.errors import TrainingDiverged

    def diverges(cfg, **kwargs):
        raise TrainingDiverged("non-finite loss (nan) in 4 updates in a row\n(more text)")

    monkeypatch.setattr("mmrft.trainer.train", diverges)
    assert main(["train", "model.tiny=tiny"]) == 1
    assert (
        capsys.readouterr().err
        == "training stopped: non-finite loss (nan) in 4 updates in a row (more text)\n"
    )
    with pytest.raises(TrainingDiverged):
        main(["train", "--debug", "model.tiny=tiny"])

    def bug(cfg, **kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr("mmrft.trainer.train", bug)
    with pytest.raises(KeyError):  # not a user error: Python prints its traceback
        main(["train", "model.tiny=tiny"])
