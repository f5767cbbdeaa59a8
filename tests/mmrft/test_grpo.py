"""Hand-computed checks of the GRPO math (mmrft/grpo.py). CPU only, well under a second."""

from __future__ import annotations

import math

import pytest
import torch

from mmrft.grpo import (
    LOSS_AGGREGATIONS,
    LossOutput,
    group_advantages,
    kl_k3,
    policy_loss,
    register_loss_agg,
    sft_loss,
    zero_variance_groups,
)

AGGREGATIONS = ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]
NAN = float("nan")


def close(a: torch.Tensor | float, b: torch.Tensor | float, tol: float = 1e-4) -> bool:
    return bool(
        torch.allclose(
            torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64), atol=tol, rtol=0
        )
    )


# ----------------------------------------------------------------------------------------------- advantages

# Two groups of G=4: [1, 0, 0, 0] and [1, 1, 0, 0].
REWARDS = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 0])


def test_group_scale_uses_unbiased_group_std():
    # group 0: mean 0.25, deviations (0.75, -0.25 x3), squares sum 0.75, / (4 - 1) = 0.25, std 0.5
    #   -> 0.75 / 0.5001 = 1.49970, -0.25 / 0.5001 = -0.49990
    # group 1: mean 0.5, deviations +-0.5, squares sum 1, / 3 -> std 0.57735 -> +-0.5 / 0.57745 = +-0.86588
    adv = group_advantages(REWARDS, 4, scale="group")
    expected = torch.tensor([1.49970, -0.49990, -0.49990, -0.49990, 0.86588, 0.86588, -0.86588, -0.86588])
    assert close(adv, expected)


def test_batch_scale_divides_by_whole_batch_std():
    # batch: mean 0.375; squares 3 * 0.625^2 + 5 * 0.375^2 = 1.875, / 7 = 0.267857, std 0.517549
    # group 0: 0.75 / 0.517649 = 1.44886, -0.25 / 0.517649 = -0.48295; group 1: +-0.5 / 0.517649 = +-0.96591
    adv = group_advantages(REWARDS, 4, scale="batch")
    expected = torch.tensor([1.44886, -0.48295, -0.48295, -0.48295, 0.96591, 0.96591, -0.96591, -0.96591])
    assert close(adv, expected)


def test_none_scale_only_subtracts_group_mean():
    # Dr. GRPO: r - group mean, group means 0.25 and 0.5
    adv = group_advantages(REWARDS, 4, scale="none")
    assert close(adv, torch.tensor([0.75, -0.25, -0.25, -0.25, 0.5, 0.5, -0.5, -0.5]))


def test_two_completions_match_torch_std():
    # G=2, rewards [0, 1]: unbiased std 0.70711 (torch.std, as TRL); -0.5 / 0.70721 = -0.70700
    adv = group_advantages(torch.tensor([0.0, 1.0]), 2)
    assert close(adv, torch.tensor([-0.70700, 0.70700]))


def test_equal_rewards_give_zero_not_nan():
    # std 0, so (r - mean) / (0 + eps) = 0 / 1e-4 = 0; and G=1 has no unbiased std: advantage 0
    assert torch.equal(group_advantages(torch.tensor([3.0, 3.0, 1.0, 1.0]), 2), torch.zeros(4))
    assert torch.equal(group_advantages(torch.tensor([0.3, 0.9]), 1), torch.zeros(2))


def test_nan_rewards_are_left_out_and_get_zero():
    # scorable [1, 0, 0]: mean 1/3, squares 4/9 + 1/9 + 1/9 = 2/3, / 2 -> std 0.57735
    # 0.66667 / 0.57745 = 1.15450, -0.33333 / 0.57745 = -0.57725; the NaN completion gets 0
    adv = group_advantages(torch.tensor([1.0, NAN, 0.0, 0.0]), 4)
    assert close(adv, torch.tensor([1.15450, 0.0, -0.57725, -0.57725]))


def test_integer_rewards_are_accepted():
    assert close(group_advantages(torch.tensor([0, 2]), 2, scale="none"), torch.tensor([-1.0, 1.0]))


def test_bad_layout_and_scale_raise():
    with pytest.raises(ValueError, match="divisible by group_size=2"):
        group_advantages(torch.zeros(5), 2)
    with pytest.raises(ValueError, match="scale must be one of"):
        group_advantages(torch.zeros(4), 2, scale="std")


def test_zero_variance_groups():
    # groups [1, 1] (no signal), [0, 1], [2, 2] (no signal), [nan, 5] (one scorable reward: no signal)
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0, 2.0, NAN, 5.0])
    zv = zero_variance_groups(rewards, 2)
    assert zv.dtype == torch.bool
    assert zv.tolist() == [True, False, True, True]
    keep = ~zv.repeat_interleave(2)  # the keep-mask over completions
    assert keep.tolist() == [False, False, True, True, False, False, False, False]
    # 0.5 and 0.5000001 differ by 1e-7: distinct exactly, equal within atol 1e-6
    near = torch.tensor([0.5, 0.5000001], dtype=torch.float64)
    assert zero_variance_groups(near, 2).tolist() == [False]
    assert zero_variance_groups(near, 2, atol=1e-6).tolist() == [True]
    with pytest.raises(ValueError, match="divisible"):
        zero_variance_groups(torch.zeros(3), 2)


# ------------------------------------------------------------------------------------------ policy loss


def on_policy(logprobs: torch.Tensor) -> torch.Tensor:
    """mu == 1: the old log-probs are the current ones, detached."""
    return logprobs.detach()


# Ragged batch: row 0 has 3 tokens, row 1 one token, row 2 none. The padding holds garbage on purpose.
RAGGED_MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
RAGGED_ADV = torch.tensor([1.0, -2.0, 5.0])


def ragged_logprobs() -> torch.Tensor:
    return torch.tensor(
        [[-0.5, -1.0, -2.0], [-0.3, -torch.inf, NAN], [NAN, torch.inf, -9.0]], requires_grad=True
    )


@pytest.mark.parametrize(
    "aggregation, expected",
    [
        # ratio 1 everywhere (mu 1), so per-token loss is -A: row 0 (-1, -1, -1), row 1 (+2), row 2 nothing
        ("token_mean", (-3 + 2) / 4),  # 4 valid tokens: -0.25
        ("seq_mean_token_mean", (-1 + 2 + 0) / 3),  # row means -1, 2, 0 (empty row) over 3 rows: 0.33333
        ("seq_mean_token_sum_norm", (-3 + 2) / (3 * 4)),  # constant N * L = 3 * 4: -0.08333
    ],
)
def test_each_aggregation_on_ragged_mask(aggregation, expected):
    logp = ragged_logprobs()
    out = policy_loss(
        logp, on_policy(logp), RAGGED_ADV, RAGGED_MASK, aggregation=aggregation, max_completion_length=4
    )
    assert isinstance(out, LossOutput)
    assert close(out.loss, expected)
    out.loss.backward()
    assert torch.isfinite(logp.grad).all()
    assert torch.equal(logp.grad[~RAGGED_MASK], torch.zeros(5))  # padding gets no gradient


def test_mu_one_gives_ratio_one_and_plain_policy_gradient():
    logp = ragged_logprobs()
    loss, metrics = policy_loss(logp, on_policy(logp), RAGGED_ADV, RAGGED_MASK)
    assert metrics["ratio_mean"] == pytest.approx(1.0)
    assert metrics["clip_frac"] == 0.0
    assert metrics["tokens"] == 4.0
    loss.backward()
    # d/dlogp of -ratio * A / 4 at ratio 1 is -A / 4: row 0 -0.25, row 1 +0.5
    assert close(logp.grad, torch.tensor([[-0.25, -0.25, -0.25], [0.5, 0, 0], [0, 0, 0]]))


# Four one-token sequences: ratios e^0.5 = 1.64872 and e^-0.5 = 0.60653, each with A = +1 and A = -1.
LOG_RATIOS = torch.tensor([[0.5], [0.5], [-0.5], [-0.5]])
SIGNS = torch.tensor([1.0, -1.0, -1.0, 1.0])


def test_clip_values_and_fractions():
    logp = LOG_RATIOS.clone().requires_grad_(True)
    old = torch.zeros(4, 1)
    out = policy_loss(
        logp, old, SIGNS, torch.ones(4, 1), aggregation="seq_mean_token_mean", epsilon_high=0.28
    )
    # token 0: 1.64872, A +1 -> clipped to 1.28, loss -1.28
    # token 1: 1.64872, A -1 -> min(-1.64872, -1.28) = -1.64872, loss +1.64872 (no clip on the harmful side)
    # token 2: 0.60653, A -1 -> clipped to 0.8, min(-0.60653, -0.8) = -0.8, loss +0.8
    # token 3: 0.60653, A +1 -> min(0.60653, 0.8) = 0.60653, loss -0.60653
    # mean (-1.28 + 1.64872 + 0.8 - 0.60653) / 4 = 0.14055
    assert close(out.loss, (-1.28 + 1.64872 + 0.8 - 0.60653) / 4)
    assert out.metrics["clip_frac_high"] == 0.25  # token 0
    assert out.metrics["clip_frac_low"] == 0.25  # token 2
    assert out.metrics["clip_frac"] == 0.5
    assert out.metrics["ratio_mean"] == pytest.approx((2 * math.exp(0.5) + 2 * math.exp(-0.5)) / 4)
    assert out.metrics["adv_abs_mean"] == 1.0 and out.metrics["adv_abs_max"] == 1.0

    # Clipped tokens get zero gradient; the others get -A * ratio / 4.
    out.loss.backward()
    # token 1: -(-1) * 1.64872 / 4 = 0.41218; token 3: -(+1) * 0.60653 / 4 = -0.15163
    assert close(logp.grad, torch.tensor([[0.0], [0.41218], [0.0], [-0.15163]]))


def test_clip_higher_is_asymmetric():
    # ratio 1.25 (log 0.22314) with A +1: clipped to 1.2 under epsilon_high 0.2 (loss -1.2),
    # untouched under clip-higher epsilon_high 0.28 (loss -1.25)
    logp, old, adv, mask = (
        torch.tensor([[math.log(1.25)]]),
        torch.zeros(1, 1),
        torch.ones(1),
        torch.ones(1, 1),
    )
    assert close(policy_loss(logp, old, adv, mask, epsilon_high=0.2).loss, -1.2)
    assert close(policy_loss(logp, old, adv, mask, epsilon_high=0.28).loss, -1.25)
    # ratio 0.75 with A -1: clamped to 1 - epsilon_low = 0.8 whatever epsilon_high is; loss +0.8
    logp = torch.tensor([[math.log(0.75)]])
    for eps_high in (0.2, 0.28):
        out = policy_loss(logp, old, -adv, mask, epsilon_low=0.2, epsilon_high=eps_high)
        assert close(out.loss, 0.8)
        assert out.metrics["clip_frac_low"] == 1.0
    # a wider epsilon_low (0.3) leaves 0.75 unclipped: min(-0.75, -0.7) = -0.75, loss +0.75
    assert close(policy_loss(logp, old, -adv, mask, epsilon_low=0.3).loss, 0.75)


def test_kl_k3_value_and_zero_at_equality():
    # ref - logp = log 0.5 = -0.69315: e^-0.69315 + 0.69315 - 1 = 0.5 + 0.69315 - 1 = 0.19315
    logp = torch.tensor([[0.0]])
    ref = torch.tensor([[math.log(0.5)]])
    assert close(kl_k3(logp, ref), 0.19315)
    assert torch.equal(kl_k3(ref, ref), torch.zeros(1, 1))
    # k3 is >= 0 on both sides: ref - logp = +0.69315 gives 2 - 0.69315 - 1 = 0.30685
    assert close(kl_k3(ref, logp), 0.30685)


def test_kl_enters_loss_with_beta():
    logp = torch.tensor([[0.0, 0.0]], requires_grad=True)
    ref = torch.tensor([[math.log(0.5), 123.0]])  # second token is padding
    mask = torch.tensor([[1.0, 0.0]])
    # A 0, so the surrogate is 0 and the loss is beta * kl = 0.1 * 0.19315 = 0.019315
    loss, metrics = policy_loss(logp, on_policy(logp), torch.zeros(1), mask, ref_logprobs=ref, beta=0.1)
    assert close(loss, 0.019315)
    assert metrics["kl"] == pytest.approx(0.19315, abs=1e-5)
    loss.backward()
    # d/dlogp (e^(ref - logp) - (ref - logp) - 1) = 1 - e^(ref - logp) = 0.5, times beta: 0.05; padding 0
    assert close(logp.grad, torch.tensor([[0.05, 0.0]]))
    # beta 0 with a reference: KL is reported but not added
    loss0, metrics0 = policy_loss(logp, on_policy(logp), torch.zeros(1), mask, ref_logprobs=ref)
    assert loss0.item() == 0.0 and metrics0["kl"] == pytest.approx(0.19315, abs=1e-5)
    # no reference at all: no KL metric
    assert "kl" not in policy_loss(logp, on_policy(logp), torch.zeros(1), mask).metrics


def test_sequence_level_ratio_gspo():
    # row: log ratios (0.2, 0.4) on valid tokens, padding garbage; sequence ratio e^0.3 = 1.34986
    logp = torch.tensor([[0.2, 0.4, 50.0]], requires_grad=True)
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    # A +1: clipped to 1.2 on every token, token_mean -> -1.2, zero gradient
    out = policy_loss(logp, old, torch.ones(1), mask, importance_level="sequence")
    assert close(out.loss, -1.2)
    assert out.metrics["clip_frac_high"] == 1.0
    assert out.metrics["ratio_mean"] == pytest.approx(math.exp(0.3), abs=1e-5)
    out.loss.backward()
    assert torch.equal(logp.grad, torch.zeros(1, 3))
    # A -1: min(-1.34986, -1.2) = -1.34986 on both tokens, loss +1.34986; the ratio depends on each
    # token through the mean, d ratio / d logp_t = ratio / 2, so d loss / d logp_t = 1.34986 / 2 = 0.67493
    logp.grad = None
    out = policy_loss(logp, old, -torch.ones(1), mask, importance_level="sequence")
    assert close(out.loss, 1.34986)
    out.loss.backward()
    assert close(logp.grad, torch.tensor([[0.67493, 0.67493, 0.0]]))
    # the token-level loss on the same data differs: ratios e^0.2 = 1.22140, e^0.4 = 1.49182 -> mean 1.35661
    assert close(policy_loss(logp, old, -torch.ones(1), mask).loss, (1.22140 + 1.49182) / 2)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_split_batch_with_global_counts_sums_to_full_loss(aggregation, importance_level):
    gen = torch.Generator().manual_seed(0)
    n, t = 6, 5
    logp = -torch.rand(n, t, generator=gen, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(n, t, generator=gen, dtype=torch.float64)  # some ratios get clipped
    ref = logp + 0.2 * torch.randn(n, t, generator=gen, dtype=torch.float64)
    adv = torch.randn(n, generator=gen, dtype=torch.float64)
    lengths = torch.tensor([5, 1, 3, 0, 2, 4])  # ragged, one empty row
    mask = torch.arange(t)[None, :] < lengths[:, None]  # [N, T]
    kw = dict(
        ref_logprobs=None,
        beta=0.05,
        aggregation=aggregation,
        max_completion_length=t,
        importance_level=importance_level,
    )

    def loss_and_grad(rows: slice, **extra) -> tuple[torch.Tensor, torch.Tensor]:
        x = logp[rows].clone().requires_grad_(True)
        out = policy_loss(x, old[rows], adv[rows], mask[rows], **{**kw, "ref_logprobs": ref[rows], **extra})
        out.loss.backward()
        return out.loss.detach(), x.grad

    full_loss, full_grad = loss_and_grad(slice(0, n))
    totals = dict(total_tokens=float(mask.sum()), total_seqs=float(n))  # 15 tokens, 6 sequences
    (l1, g1), (l2, g2) = loss_and_grad(slice(0, 3), **totals), loss_and_grad(slice(3, n), **totals)
    assert torch.allclose(l1 + l2, full_loss, atol=1e-12)
    assert torch.allclose(torch.cat([g1, g2]), full_grad, atol=1e-12)
    # without the global counts the halves are each a local mean, and (for this ragged split) do not add up
    (m1, _), (m2, _) = loss_and_grad(slice(0, 3)), loss_and_grad(slice(3, n))
    assert not torch.allclose(m1 + m2, full_loss)


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("importance_level", ["token", "sequence"])
def test_fully_masked_rows_are_nan_free(aggregation, importance_level):
    # every row masked, padding full of inf / nan: loss 0, metrics finite, gradient 0
    logp = torch.tensor([[torch.inf, NAN], [-torch.inf, 80.0]], requires_grad=True)
    old = torch.tensor([[NAN, -torch.inf], [torch.inf, -80.0]])
    ref = torch.tensor([[NAN, 90.0], [-90.0, torch.inf]])
    mask = torch.zeros(2, 2)
    loss, metrics = policy_loss(
        logp, old, torch.tensor([1.0, -1.0]), mask, ref_logprobs=ref, beta=0.1,
        aggregation=aggregation, max_completion_length=2, importance_level=importance_level,
    )  # fmt: skip
    assert loss.item() == 0.0
    assert all(math.isfinite(v) for v in metrics.values())
    loss.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 2))


def test_float_mask_equals_bool_mask():
    logp = torch.tensor([[-0.1, -0.7, -0.2], [-0.4, -0.5, -0.6]])
    old = torch.tensor([[-0.3, -0.2, -0.9], [-0.4, -0.1, -0.6]])
    adv = torch.tensor([0.7, -1.3])
    bool_mask = torch.tensor([[True, True, False], [True, False, False]])
    for agg in AGGREGATIONS:
        a = policy_loss(logp, old, adv, bool_mask, aggregation=agg, max_completion_length=3)
        b = policy_loss(logp, old, adv, bool_mask.float(), aggregation=agg, max_completion_length=3)
        assert torch.equal(a.loss, b.loss) and a.metrics == b.metrics


def test_bf16_inputs_are_computed_in_float32():
    logp = torch.tensor([[-0.5, -1.0]], dtype=torch.bfloat16, requires_grad=True)
    loss, _ = policy_loss(logp, on_policy(logp), torch.ones(1), torch.ones(1, 2))
    assert loss.dtype == torch.float32
    loss.backward()
    assert logp.grad.dtype == torch.bfloat16


def test_policy_loss_errors_say_what_is_wrong():
    logp, adv, mask = torch.zeros(2, 3), torch.zeros(2), torch.ones(2, 3)
    with pytest.raises(ValueError, match="aggregation must be one of .*token_mean"):
        policy_loss(logp, logp, adv, mask, aggregation="mean")
    with pytest.raises(ValueError, match="needs max_completion_length"):
        policy_loss(logp, logp, adv, mask, aggregation="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="beta > 0 needs ref_logprobs"):
        policy_loss(logp, logp, adv, mask, beta=0.04)
    with pytest.raises(ValueError, match="importance_level must be one of"):
        policy_loss(logp, logp, adv, mask, importance_level="seq")
    with pytest.raises(ValueError, match=r"advantages must be \[N\] = \[2\]"):
        policy_loss(logp, logp, torch.zeros(2, 1), mask)
    with pytest.raises(ValueError, match="logprobs and mask must both be"):
        policy_loss(logp, logp, adv, torch.ones(2, 4))


def test_aggregations_come_from_the_registry():
    assert set(AGGREGATIONS) <= set(LOSS_AGGREGATIONS)
    with pytest.raises(ValueError, match="already registered"):
        register_loss_agg("token_mean")(lambda per_token, mask, norm: per_token.sum())

    @register_loss_agg("test_seq_sum")
    def seq_sum(per_token, mask, norm):
        return per_token.sum() / per_token.shape[0]

    try:
        # ratio 1, A (1, -2), row 0 three tokens: (-3 + 2) / 2 = -0.5
        logp = torch.zeros(2, 3)
        mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
        assert close(
            policy_loss(logp, logp, torch.tensor([1.0, -2.0]), mask, aggregation="test_seq_sum").loss, -0.5
        )
    finally:
        del LOSS_AGGREGATIONS["test_seq_sum"]


# ------------------------------------------------------------------------------------------------- SFT


def test_sft_loss_is_mean_nll_of_answer_tokens():
    logp = torch.tensor([[-1.0, -2.0, NAN], [-3.0, -torch.inf, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # (1 + 2 + 3) / 3 = 2
    loss, metrics = sft_loss(logp, mask)
    assert close(loss, 2.0)
    assert metrics == {"nll": 2.0, "tokens": 3.0}
    loss.backward()
    assert close(logp.grad, torch.tensor([[-1 / 3, -1 / 3, 0.0], [-1 / 3, 0.0, 0.0]]))
    # global count of 6 tokens (this micro-batch holds half of them): 6 / 6 = 1
    assert close(sft_loss(logp, mask, total_tokens=6.0).loss, 1.0)
    assert close(sft_loss(logp, mask, total_tokens=torch.tensor(6.0)).loss, 1.0)  # e.g. from an all-reduce
    # halves with the global count add up to the full loss: (1 + 2) / 3 + 3 / 3 = 2
    halves = (
        sft_loss(logp[:1], mask[:1], total_tokens=3.0).loss
        + sft_loss(logp[1:], mask[1:], total_tokens=3.0).loss
    )
    assert close(halves, 2.0)
    # nothing to learn from: 0, not NaN
    empty_loss, empty_metrics = sft_loss(logp, torch.zeros(2, 3))
    assert empty_loss.item() == 0.0 and empty_metrics["nll"] == 0.0
