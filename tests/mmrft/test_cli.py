import json
import subprocess
import sys

from mmrft.cli import main


def test_help_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    for cmd in ("train", "make-tiny", "rewards", "data"):
        assert cmd in out


def test_help_config_documents_every_field(capsys):
    assert main(["train", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "grpo.epsilon_high = 0.2" in out and "rollout.group_size = 8" in out


def test_make_tiny_writes_a_loadable_checkpoint(tmp_path, capsys):
    assert main(["make-tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert (tmp_path / "m" / "config.json").is_file()
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model_type"] == "qwen2_5_vl"


def test_bad_override_is_one_line_on_stderr(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "mmrft", "train", "grpo.betta=1", f"train.output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert proc.stderr.strip() == (
        "config error: unknown config field grpo.betta; allowed: steps, beta, epsilon_low, epsilon_high, "
        "scale_rewards, loss_aggregation, importance_level, num_iterations, drop_zero_variance_groups, tis_cap, "
        "guidance, guidance_threshold, guidance_gamma"
    )


def test_quickstart_command_end_to_end(tmp_path, capsys):
    """`mmrft train` on the quickstart recipe, shrunk to seconds: the run directory has every output."""
    run = tmp_path / "qs"
    code = main([
        "train", "--output-dir", str(run), "model.tiny=tiny", "data.synthetic.n_train=32",
        "data.synthetic.n_eval=8", "sft.steps=2", "grpo.steps=2", "train.prompts_per_step=4",
        "rollout.group_size=4", "train.micro_batch_size=16", "eval.max_samples=8", "train.progress_bar=false",
    ])  # fmt: skip
    assert code == 0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary) >= {"eval_before", "eval_after", "wall_seconds"}
    assert 0.0 <= summary["eval_after"]["reward"] <= 1.0
    for name in ("config.yaml", "metrics.jsonl", "samples.jsonl", "reward_curve.png", "final/config.json"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").iterdir())
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"] == str(run)


def test_eval_command_scores_a_checkpoint(tmp_path, tiny_model_dir, shapes_dir, capsys):
    code = main(["eval", "--model", str(tiny_model_dir), "--data", str(shapes_dir / "classification_heldout.jsonl"),
                 "--limit", "4", "rewards=[format, accuracy]", "rollout.max_completion_length=4"])  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out  # the table (tests/mmrft/test_eval_cli.py checks the files)
    assert "| n | 4 |" in out and "| reward/format |" in out
    assert "| reward/accuracy | 0.0000 |" in out  # an untrained tiny model does not answer in tags
