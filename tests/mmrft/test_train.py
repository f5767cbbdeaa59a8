"""End-to-end training on the tiny model: parameters move, frozen ones do not, resume is exact,
bad input fails with one line naming what to fix."""

import json
from pathlib import Path

import pytest
import torch

from mmrft.config import load_config
from mmrft.trainer import Trainer, train

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"


def _cfg(tmp_path, shapes_dir, tiny_model_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=4", "rollout.max_completion_length=8",
        "train.prompts_per_step=4", "train.micro_batch_size=8", "train.lr=1e-3",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=8", "eval.batch_size=8",
        f"rewards=[{{name: '{PLUGIN}'}}, accuracy]",
        *extra,
    ])  # fmt: skip


def test_three_steps_move_every_trainable_parameter_and_no_frozen_one(tmp_path, shapes_dir, tiny_model_dir):
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=3", "model.freeze_vision=true")
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all(".visual." not in n for n in trainable)
    assert any(".visual." in n for n in before)
    summary = trainer.run()
    after = dict(trainer.policy.named_parameters())
    for n, p in before.items():
        changed = not torch.equal(p, after[n].detach())
        assert changed == (n in trainable), f"{n}: changed={changed}, trainable={n in trainable}"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r["stage"] == "grpo" and "loss" in r]
    assert len(grpo) == 3 and all(r["reward_std"] > 0 for r in grpo)
    assert set(summary) >= {"eval_before", "eval_after", "wall_seconds"}
    assert (tmp_path / "run" / "samples.jsonl").read_text().count('"completion"') == 2 * 4  # 2 prompts x G
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_sft_lowers_answer_loss(tmp_path, shapes_dir, tiny_model_dir):
    cfg = _cfg(
        tmp_path, shapes_dir, tiny_model_dir, "sft.steps=8", "sft.batch_size=8", "sft.lr=3e-3", "grpo.steps=0"
    )
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["stage"] == "sft"]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]


def test_resume_continues_exactly_where_it_stopped(tmp_path, shapes_dir, tiny_model_dir):
    common = [
        "sft.steps=2",
        "sft.batch_size=4",
        "grpo.steps=3",
        "train.save_every=1",
        "grpo.num_iterations=2",
    ]
    full = _cfg(tmp_path / "a", shapes_dir, tiny_model_dir, *common)
    ta = Trainer(full)
    ta.run()
    part = _cfg(tmp_path / "b", shapes_dir, tiny_model_dir, *common)
    assert Trainer(part).run(stop_after=3) == {"stopped_at": 3}  # a "crash" after the first GRPO step
    with pytest.raises(FileExistsError, match="pass --resume"):
        Trainer(part)
    tb = Trainer(part, resume=True)
    assert tb.state["step"] == 3
    tb.run()
    for (n, p), (_, q) in zip(ta.policy.named_parameters(), tb.policy.named_parameters()):
        assert torch.equal(p, q), n
    la = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    key = [(r["stage"], r["step"], r.get("loss"), r.get("reward")) for r in la if "loss" in r]
    assert key == [(r["stage"], r["step"], r.get("loss"), r.get("reward")) for r in lb if "loss" in r]


def test_missing_image_names_the_record(tmp_path, shapes_dir, tiny_model_dir):
    lines = (shapes_dir / "classification_train.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    rec["images"] = ["images/does-not-exist.png"]
    bad = shapes_dir / "bad.jsonl"
    bad.write_text(json.dumps(rec) + "\n")
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, f"data.train_file={bad}", "grpo.steps=1")
    with pytest.raises(ValueError) as e:
        train(cfg)
    msg = str(e.value)
    assert rec["id"] in msg and "does-not-exist.png" in msg and "\n" not in msg


def test_unknown_reward_lists_the_available_ones(tmp_path, shapes_dir, tiny_model_dir):
    with pytest.raises(  # at config load now, before any model is built
        ValueError, match=r"rewards\[0\].name: unknown reward 'acuracy'; available: .*accuracy"
    ):
        Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, "rewards=[acuracy]"))


def test_lora_trains_only_the_adapters_and_saves_them(tmp_path, shapes_dir, tiny_model_dir):
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=2", "model.lora_r=4", "model.lora_alpha=8",
               "model.lora_dropout=0.0")  # fmt: skip
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainable = {n for n, p in trainer.policy.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    trainer.run()
    after = dict(trainer.policy.named_parameters())
    changed = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    assert changed and changed <= trainable
    assert any("lora_B" in n for n in changed)  # B starts at zero: it moved, so the adapter learned
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()


def test_mixed_precision_keeps_fp32_master_weights(tmp_path, shapes_dir, tiny_model_dir):
    """bf16 autocast compute (what `auto` picks on a GPU) with float32 weights, exercised on CPU."""
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=2", "model.compute_dtype=bfloat16")
    trainer = Trainer(cfg)
    assert trainer.policy.compute_dtype == torch.bfloat16
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0 for r in rows if r.get("stage") == "grpo" and "loss" in r)
    for n, p in trainer.policy.named_parameters():
        assert p.dtype == torch.float32, n
    assert sum(not torch.equal(before[n], p.detach()) for n, p in trainer.policy.named_parameters()) > 0


def test_dynamic_sampling_with_no_signal_leaves_weights_alone(tmp_path, shapes_dir, tiny_model_dir):
    constant = str(Path(__file__).with_name("reward_plugins.py")) + ":constant_reward"
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=1", "grpo.drop_zero_variance_groups=true",
               f"rewards=[{{name: '{constant}'}}]")  # fmt: skip
    trainer = Trainer(cfg)
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.run()
    (row,) = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if '"loss"' in x
    ]
    assert row["zero_std_frac"] == 1.0 and row["loss"] == 0.0 and row["grad_norm"] == 0.0
    for n, p in trainer.policy.named_parameters():
        assert torch.equal(before[n], p.detach()), n


def test_video_temporal_grounding_trains_with_true_timestamps(tmp_path, tiny_model_dir):
    """Video records reach the model with their sampled timing (second_per_grid_ts = 2 / fps) and train."""
    from data_pipelines.synthetic.video import write_video_dataset
    from mmrft.rollout import encode_prompts

    train = write_video_dataset(tmp_path / "vid", n=4, seed=0, sample_fps=2.0, max_frames=8)
    cfg = load_config(None, [
        f"model.path={tiny_model_dir}", f"data.train_file={train}", f"data.eval_file={train}",
        f"train.output_dir={tmp_path / 'run'}", "data.video_fps=2.0", "data.video_max_frames=8",
        "rollout.group_size=2", "rollout.max_completion_length=6", "rollout.max_prompt_length=4096",
        "train.prompts_per_step=2", "train.micro_batch_size=4", "grpo.steps=2", "eval.max_samples=2",
        f"rewards=[{{name: '{PLUGIN}'}}, temporal_iou]", "train.progress_bar=false", "train.plot=false",
    ])  # fmt: skip
    trainer = Trainer(cfg)
    sample = trainer.data.train[0]
    # 6 s at 2 fps would be 12 frames; max_frames=8 spreads 8 over the 6 s: 4/3 frames per second
    assert len(sample.video.timestamps) == 8 and sample.video.fps == pytest.approx(8 / 6)
    pb = encode_prompts(trainer.policy, trainer.processor, [sample], 4096, torch.device("cpu"))
    # temporal patch 2 / (4/3 fps) = 1.5 s per grid step: the sampled timing, never the 24 fps default
    assert pb.second_per_grid_ts.tolist() == pytest.approx([1.5])
    summary = trainer.run()
    assert "reward/temporal_iou" in summary["eval_after"]


def test_skip_mode_trains_around_bad_records_and_reports_them(tmp_path, shapes_dir, tiny_model_dir, capsys):
    lines = (shapes_dir / "classification_train.jsonl").read_text().splitlines()[:8]
    bad = json.loads(lines[0])
    bad["id"], bad["images"] = "broken-one", ["images/missing.png"]
    corrupt = json.loads(lines[1])
    corrupt["id"], corrupt["images"] = "corrupt-one", ["corrupt.png"]
    (shapes_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    mixed = shapes_dir / "mixed.jsonl"
    mixed.write_text("\n".join([json.dumps(bad), json.dumps(corrupt), *lines[2:]]) + "\n")
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, f"data.train_file={mixed}", "data.on_bad_record=skip",
               "grpo.steps=2", "train.prompts_per_step=8", "rollout.group_size=2", "train.micro_batch_size=16")  # fmt: skip
    summary = train(cfg)
    assert summary["skipped_records"]["train"] == {"missing_file": 1, "corrupt_image": 1}
    assert "train data: skipped 2 record(s)" in capsys.readouterr().out
