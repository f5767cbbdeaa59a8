"""Demonstration-guided GRPO: LUFFY's off-policy loss by hand, and on the tiny model an all-wrong group
gives a gradient only with guidance on; with it off (or never firing) the step is bit-identical."""

import math
from pathlib import Path

import torch

from mmrft.config import load_config
from mmrft.guidance import offpolicy_loss
from mmrft.trainer import Trainer

PLUGINS = Path(__file__).with_name("reward_plugins.py")


def test_offpolicy_loss_is_shaped_unclipped_and_hand_computed():
    # p = 0.1 and 0.3, gamma 0.1: f(p) = p / (p + gamma) = 0.5 and 0.75; A = 1, token_mean over 2 tokens
    logp = torch.tensor([[math.log(0.1), math.log(0.3), 5.0]], requires_grad=True)  # last one is padding
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    out = offpolicy_loss(logp, torch.tensor([1.0]), mask, gamma=0.1)
    assert math.isclose(float(out.loss.detach()), -(0.5 + 0.75) / 2, rel_tol=1e-6)
    out.loss.backward()
    # d f / d logp = gamma * p / (p + gamma)^2: 0.1*0.1/0.04 = 0.25 and 0.1*0.3/0.16 = 0.1875, halved, negated
    assert torch.allclose(logp.grad, torch.tensor([[-0.125, -0.09375, 0.0]]))
    assert (
        math.isclose(out.metrics["offpolicy_prob"], 0.2, rel_tol=1e-6)
        and out.metrics["offpolicy_tokens"] == 2
    )
    # a ratio far from 1 is not clipped: p = 0.9 still moves (a PPO clip at 1.2 against old p 0.01 would not)
    far = torch.tensor([[math.log(0.9)]], requires_grad=True)
    offpolicy_loss(far, torch.tensor([2.0]), torch.ones(1, 1), gamma=0.1).loss.backward()
    assert float(far.grad) < -0.1


def _cfg(tmp_path, shapes_dir, tiny_model_dir, reward, *extra):
    return load_config(None, [
        f"model.path={tiny_model_dir}",
        f"data.train_file={shapes_dir / 'classification_train.jsonl'}",
        f"train.output_dir={tmp_path / 'run'}",
        "rollout.group_size=4", "rollout.max_completion_length=4",
        "train.prompts_per_step=2", "train.micro_batch_size=8", "train.lr=1e-3",
        "train.progress_bar=false", "train.tensorboard=false", "train.plot=false",
        f"rewards=[{{name: '{reward}'}}]",
        *extra,
    ])  # fmt: skip


def _step(cfg):
    t = Trainer(cfg)
    before = [p.detach().clone() for p in t.policy.parameters()]
    metrics, _ = t.grpo_step(0, 0)
    moved = any(not torch.equal(p, q) for p, q in zip(before, t.policy.parameters()))
    return t, metrics, moved


def test_all_wrong_groups_get_a_gradient_only_with_guidance(tmp_path, shapes_dir, tiny_model_dir):
    # accuracy: 4 tokens cannot hold "<answer>circle</answer>", so every sampled completion scores 0
    _, off, moved_off = _step(_cfg(tmp_path / "a", shapes_dir, tiny_model_dir, "accuracy"))
    assert off["reward"] == 0.0 and off["grad_norm"] == 0.0 and not moved_off and "guidance_frac" not in off
    t, on, moved_on = _step(
        _cfg(tmp_path / "b", shapes_dir, tiny_model_dir, "accuracy", "grpo.guidance=reference")
    )
    assert on["guidance_frac"] == 1.0 and on["grad_norm"] > 0 and moved_on
    assert on["reward"] == 1 / 4  # one reference answer (reward 1) in each group of 4
    # the reference reward is right and the policy's own reward metric stays the policy's
    assert on["reward/accuracy"] == 0.0


def test_guidance_that_never_fires_leaves_the_step_bit_identical(tmp_path, shapes_dir, tiny_model_dir):
    length = f"{PLUGINS}:length_reward"
    a, m_none, _ = _step(_cfg(tmp_path / "a", shapes_dir, tiny_model_dir, length))
    b, m_ref, _ = _step(
        _cfg(tmp_path / "b", shapes_dir, tiny_model_dir, length, "grpo.guidance=reference",
             "grpo.guidance_threshold=-1e9")
    )  # fmt: skip
    assert m_ref.pop("guidance_frac") == 0.0 and m_none["grad_norm"] > 0
    assert m_ref.pop("offpolicy_tokens") == 0.0 and m_ref.pop("offpolicy_prob") == 0.0  # logged, never fired
    for m in (m_none, m_ref):  # wall time and process memory differ between any two runs
        for k in [k for k in m if k == "step_time" or k.startswith("mem/")]:
            m.pop(k)
    assert m_none == m_ref
    for p, q in zip(a.policy.parameters(), b.policy.parameters()):
        assert torch.equal(p, q)
