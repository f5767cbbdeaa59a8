"""The non-finite guard: a bad reward is an error naming the reward and the record; a non-finite loss or
gradient norm skips the update (weights untouched, counted and logged as "nan"); more than
train.max_bad_steps in a row stop the run with the last good state saved; no non-finite weight is saved."""

import json
import math
from pathlib import Path

import pytest
import torch

import mmrft.trainer as trainer_module
from data_pipelines.sample import Sample
from mmrft.config import RewardSpec, load_config
from mmrft.errors import RewardError, TrainingDiverged
from mmrft.scoring import RewardStack
from mmrft.tracking import Tracker, read_metrics
from mmrft.trainer import Trainer

PLUGINS = str(Path(__file__).with_name("guard_plugins.py"))


def _samples(n: int) -> list[Sample]:
    prompt = [{"role": "user", "content": [{"type": "text", "text": "colour?"}]}]
    return [
        Sample(id=f"rec-{i}", task="classification", prompt=prompt, solution={"label": "red"})
        for i in range(n)
    ]


@pytest.mark.parametrize(
    "fn, shown, j",
    [("inf_once", "inf", 2), ("minus_inf_once", "-inf", 1), ("nan_everywhere", "nan", 0),
     ("huge", "1e+300", 0), ("words", "'high'", 0)],
)  # fmt: skip
def test_a_bad_score_names_the_reward_and_the_record(fn, shown, j):
    stack = RewardStack([RewardSpec(f"{PLUGINS}:length"), RewardSpec(f"{PLUGINS}:{fn}")])
    with pytest.raises(RewardError) as e:
        stack(["a", "bb", "ccc", "dddd"], _samples(4))
    msg = str(e.value)
    assert msg.startswith(f"reward '{fn}' returned {shown} for record 'rec-{j}' (completion {j});"), msg
    assert "None = not applicable" in msg or "or None for not applicable" in msg
    assert "\n" not in msg


def test_a_weighted_sum_that_overflows_float32_is_an_error():
    # 3e38 fits float32 (max 3.4e38); 3e38 * 1 + 3e38 * 1 = 6e38 does not
    stack = RewardStack([RewardSpec(f"{PLUGINS}:big"), RewardSpec(f"{PLUGINS}:big")])
    with pytest.raises(
        RewardError, match=r"record 'rec-0' \(completion 0\) overflows float32: big=3e\+38 x 1"
    ):
        stack(["a", "b"], _samples(2))
    # one of them alone, weighted 0.5, is fine: 1.5e38
    out = RewardStack([RewardSpec(f"{PLUGINS}:big", weight=0.5)])(["a", "b"], _samples(2))
    assert out.total.tolist() == pytest.approx([1.5e38, 1.5e38], rel=1e-6)


def test_none_still_means_not_applicable():
    stack = RewardStack([RewardSpec(f"{PLUGINS}:length"), RewardSpec(f"{PLUGINS}:not_applicable")])
    out = stack(["a" * 10, "b" * 20], _samples(2))
    assert out.total.tolist() == pytest.approx([0.25, 0.5])  # 10/40 and 20/40: only `length` applies
    assert torch.isnan(out.per_reward[1]).all()
    assert "reward/not_applicable" not in out.metrics and out.metrics["reward/length"] == pytest.approx(0.375)
    alone = RewardStack([RewardSpec(f"{PLUGINS}:not_applicable")])(["a"], _samples(1))
    assert torch.isnan(alone.total).all()  # no reward applies: no score (zero advantage), no error


def test_non_finite_metrics_are_logged_as_such_not_as_null(tmp_path):
    tracker = Tracker(tmp_path, True, tensorboard=True, progress_bar=False, total=1)
    tracker.log(3, "grpo", {"loss": float("nan"), "grad_norm": float("inf"), "kl": -float("inf"), "lr": 0.5})
    tracker.close()
    (line,) = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert json.loads(line) == {
        "step": 3,
        "stage": "grpo",
        "loss": "nan",
        "grad_norm": "inf",
        "kl": "-inf",
        "lr": 0.5,
    }
    (row,) = read_metrics(tmp_path / "metrics.jsonl")
    assert math.isnan(row["loss"]) and row["grad_norm"] == math.inf and row["kl"] == -math.inf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    (loss,) = events.Scalars("grpo/loss")
    assert loss.step == 3 and math.isnan(loss.value)  # TensorBoard gets the float itself


def _cfg(tmp_path, shapes_dir, tiny_model_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=4", "rollout.max_completion_length=8",
        "train.prompts_per_step=4", "train.micro_batch_size=8", "train.lr=1e-3",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=4", "eval.batch_size=4",
        f"rewards=[{{name: '{PLUGINS}:length'}}]",
        *extra,
    ])  # fmt: skip


def _poison(monkeypatch, trainer, name: str, steps: tuple[str, ...]):
    """Make the loss NaN in the steps named (``trainer._where`` in ``steps``)."""
    real = getattr(trainer_module, name)

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan")) if trainer._where in steps else out

    monkeypatch.setattr(trainer_module, name, poisoned)


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}


def test_a_non_finite_loss_skips_the_update_and_is_counted(tmp_path, shapes_dir, tiny_model_dir, monkeypatch):
    trainer = Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=2", "train.max_bad_steps=2"))
    _poison(monkeypatch, trainer, "policy_loss", steps=("grpo step 0", "grpo step 1"))
    before = _weights(trainer)
    trainer.run()
    for n, p in trainer.policy.named_parameters():
        assert torch.equal(before[n], p.detach()), n  # both updates skipped: nothing moved
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r]
    assert [r["skipped_steps"] for r in rows] == [1.0, 2.0]
    assert all(math.isnan(r["loss"]) and math.isnan(r["grad_norm"]) for r in rows)
    raw = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert '"loss": "nan"' in raw and '"loss": null' not in raw
    from safetensors.torch import load_file

    final = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in final.values())


def test_too_many_bad_updates_stop_the_run_with_the_last_good_state(
    tmp_path, shapes_dir, tiny_model_dir, monkeypatch
):
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=6", "train.max_bad_steps=1")
    trainer = Trainer(cfg)
    _poison(monkeypatch, trainer, "policy_loss", steps=("grpo step 1", "grpo step 2", "grpo step 3"))
    with pytest.raises(TrainingDiverged) as e:
        trainer.run()
    msg = str(e.value)
    # steps 1 and 2 skipped: 2 in a row > max_bad_steps=1, so it stops after grpo step 2 (global step 3)
    assert (
        "non-finite loss (nan) in 2 updates in a row, more than train.max_bad_steps=1: grpo phase, grpo step 2"
        in msg
    )
    assert f"batch of records {trainer._batch_ids[0]!r}" in msg and "(global step 3;" in msg
    assert "\n" not in msg
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "summary.json").exists()
    stopped = _weights(trainer)
    assert all(torch.isfinite(p).all() for p in stopped.values())
    monkeypatch.undo()
    resumed = Trainer(cfg, resume=True)  # the saved state is the one the run stopped with
    assert resumed.state["step"] == 3 and resumed.state["skipped_steps"] == 2
    for n, p in resumed.policy.named_parameters():
        assert torch.equal(stopped[n], p.detach()), n


def test_sft_names_its_phase(tmp_path, shapes_dir, tiny_model_dir, monkeypatch):
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "sft.steps=3", "sft.batch_size=4", "grpo.steps=1",
               "train.max_bad_steps=0")  # fmt: skip
    trainer = Trainer(cfg)
    _poison(monkeypatch, trainer, "sft_loss", steps=("sft step 1",))
    with pytest.raises(
        TrainingDiverged,
        match=r"in 1 updates in a row, more than train.max_bad_steps=0: sft phase, sft step 1",
    ):
        trainer.run()


def test_an_update_that_makes_weights_non_finite_stops_before_anything_is_saved(
    tmp_path, shapes_dir, tiny_model_dir
):
    # decoupled weight decay multiplies each weight by 1 - lr * wd = 1 - 1e39: past float32, so inf
    cfg = _cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=2", "train.lr=10", "train.weight_decay=1e38")
    with pytest.raises(TrainingDiverged, match="the update of grpo step 0 made weights non-finite"):
        Trainer(cfg).run()
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("fn", ["inf_once", "nan_everywhere"])
def test_a_poisoned_reward_stops_training_naming_it(tmp_path, shapes_dir, tiny_model_dir, fn):
    cfg = _cfg(
        tmp_path,
        shapes_dir,
        tiny_model_dir,
        "grpo.steps=2",
        "data.eval_file=null",
        f"rewards=[{{name: '{PLUGINS}:{fn}'}}]",
    )
    trainer = Trainer(cfg)
    before = _weights(trainer)
    with pytest.raises(RewardError, match=rf"reward '{fn}' returned (inf|nan) for record 'shapes-"):
        trainer.run()
    assert all(torch.equal(before[n], p.detach()) for n, p in trainer.policy.named_parameters())
    assert not (tmp_path / "run" / "final").exists()


def test_a_huge_learning_rate_ends_with_the_guard_not_a_nan_final(tmp_path, capsys):
    """The quickstart command, shrunk, with train.lr=1e3: the first update blows the weights up (finite),
    every later gradient is NaN, so the guard skips them and stops the run; nothing non-finite is saved."""
    from mmrft.cli import main

    run = tmp_path / "qs"
    code = main([
        "train", "--output-dir", str(run), "model.tiny=tiny", "data.synthetic.n_train=32",
        "data.synthetic.n_eval=8", "sft.steps=0", "grpo.steps=6", "train.prompts_per_step=4",
        "rollout.group_size=4", "train.micro_batch_size=16", "eval.max_samples=4", "train.progress_bar=false",
        "train.tensorboard=false", "train.plot=false", "train.lr=1e3", "train.max_bad_steps=1",
        f"rewards=[{{name: '{PLUGINS}:length'}}]",
    ])  # fmt: skip
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("training stopped: non-finite grad_norm (nan) in 2 updates in a row"), err[-1]
    assert not (run / "final").exists()
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert rows[0]["skipped_steps"] == 0.0 and math.isfinite(rows[0]["grad_norm"])
    assert [r["skipped_steps"] for r in rows[1:]] == [1.0, 2.0] and all(
        math.isnan(r["grad_norm"]) for r in rows[1:]
    )
    resumed = Trainer(load_config(run / "config.yaml"), resume=True)  # the saved state: finite weights
    assert all(torch.isfinite(p).all() for p in resumed.policy.parameters())
