"""GRPO math: group advantages, the clipped policy loss with KL, loss aggregations, and the SFT loss.

Pure tensor functions: no model, no I/O, no ``torch.distributed``. The trainer calls them in this order::

    adv = group_advantages(rewards, G, scale="group")                 # [B*G]
    keep = ~zero_variance_groups(rewards, G).repeat_interleave(G)     # [B*G], optional dynamic sampling
    loss, metrics = policy_loss(logp, old_logp, adv, mask, ...)       # logp/old_logp/mask [N, T], adv [N]

Shapes: ``B`` prompts, ``G`` completions per prompt (the group), ``N`` completions in a micro-batch,
``T`` completion tokens (right-padded; ``mask`` marks the real ones).

``num_iterations`` (mu, config ``grpo.num_iterations``) is the number of optimizer passes the trainer
makes over one batch of rollouts. Nothing here keeps state for it; the trainer decides what
``old_logprobs`` is:

* mu == 1: every rollout is used for exactly one update, so the policy that sampled it is the current
  one and the ratio is 1 in value. The trainer passes ``old_logprobs = logprobs.detach()`` (no extra
  forward pass). The gradient is still that of the ratio, ``d ratio = ratio * d logp``, i.e. the plain
  policy gradient ``-A * d logp``; clipping never triggers.
* mu > 1: before the first update the trainer runs one no-grad forward of the rollout policy and
  stores its per-token log-probs with the rollout; every one of the mu passes uses those stored
  ``old_logprobs``, so the ratio moves away from 1 and clipping bounds the update.

Global normalisers (gradient accumulation and data parallelism). Every aggregation divides a sum by a
count. By default that count is local to the tensors passed in, so a loss computed on a micro-batch
is the micro-batch's mean. Passing ``total_tokens`` / ``total_seqs`` replaces the local count with the
count over the WHOLE optimizer step (all micro-batches on all ranks); each call then returns that
micro-batch's share of the global loss, and shares add up exactly::

    sum over micro-batches and ranks of policy_loss(mb, total_tokens=T_all, total_seqs=N_all).loss
        == policy_loss(full batch).loss

The trainer therefore SUMS micro-batch losses (does not average them), and, because DDP and FSDP
average gradients over ranks, either multiplies each rank's loss by the world size or turns that
averaging off (FSDP2: ``set_gradient_divide_factor(1.0)``). The counts are computed by the trainer
(e.g. an all-reduce of ``mask.sum()``), never here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "LOSS_AGGREGATIONS",
    "LossOutput",
    "Normalisers",
    "group_advantages",
    "kl_k3",
    "policy_loss",
    "register_loss_agg",
    "sft_loss",
    "tis_weights",
    "zero_variance_groups",
]

ADVANTAGE_SCALES = ("group", "batch", "none")
IMPORTANCE_LEVELS = ("token", "sequence")


class LossOutput(NamedTuple):
    """A scalar loss to call ``backward`` on, and detached float metrics for logging."""

    loss: Tensor  # [] with grad
    metrics: dict[str, float]


class Normalisers(NamedTuple):
    """The counts an aggregation may divide by; ``None`` means "use the local count"."""

    total_tokens: float | Tensor | None = None  # valid tokens in the whole optimizer step
    total_seqs: float | Tensor | None = None  # sequences in the whole optimizer step
    max_completion_length: int | None = None  # Dr. GRPO's constant per-sequence length


# ---------------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------------


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    """Check the layout and view ``rewards`` [B*G] as [B, G] in a float dtype."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    if rewards.dim() != 1 or rewards.numel() % group_size != 0:
        raise ValueError(
            f"rewards must be 1-D with a length divisible by group_size={group_size}, got shape "
            f"{tuple(rewards.shape)}"
        )
    if not rewards.is_floating_point():
        rewards = rewards.float()
    return rewards.view(-1, group_size)  # [B, G]


def _nan_std(x: Tensor, dim: int | None) -> Tensor:
    """Unbiased (n - 1) std ignoring NaN; 0 where fewer than two values are present."""
    valid = ~torch.isnan(x)
    n = valid.sum(dim=dim, keepdim=True)
    mean = torch.nanmean(x, dim=dim, keepdim=True)
    sq = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x)).sum(dim=dim, keepdim=True)
    var = torch.where(n > 1, sq / (n - 1).clamp(min=1), torch.zeros_like(sq))
    return var.sqrt() if dim is not None else var.sqrt().reshape(())


def group_advantages(rewards: Tensor, group_size: int, scale: str = "group", eps: float = 1e-4) -> Tensor:
    """Group-relative advantages of GRPO.

    Args:
        rewards: [B*G] one scalar reward per completion, group-contiguous (the G completions of
            prompt 0 first, then prompt 1, ...). NaN marks an unscorable completion: it is left out of
            the group statistics and gets advantage 0 (as TRL does).
        group_size: G, completions per prompt.
        scale: ``"group"``: (r - group mean) / (group std + eps) (GRPO);
            ``"batch"``: (r - group mean) / (std over the whole batch + eps) (the "batch" option of TRL,
            robust to groups of near-equal rewards);
            ``"none"``: r - group mean (Dr. GRPO, no std division).
        eps: added to the std, so that a zero-variance group gives advantages 0 rather than NaN.

    Returns:
        [B*G] advantages, same order as ``rewards``.

    The std is the UNBIASED one (divides by n - 1), because TRL's ``GRPOTrainer`` uses ``torch.std``
    (unbiased) and we want the same advantages for the same rewards when comparing against it. With G = 2
    and rewards [0, 1] that std is 0.7071, so the advantages are +-0.7071 (the biased std, 0.5, would
    give +-1). A group (or batch) with fewer than two scorable rewards has std 0.
    """
    if scale not in ADVANTAGE_SCALES:
        raise ValueError(f"scale must be one of {ADVANTAGE_SCALES}, got {scale!r}")
    grouped = _grouped(rewards, group_size)  # [B, G]
    nan = torch.isnan(grouped)  # [B, G]
    # A fully-NaN group has a NaN mean; its entries are zeroed below anyway.
    mean = torch.nanmean(grouped, dim=1, keepdim=True)  # [B, 1]
    adv = grouped - mean  # [B, G]
    if scale == "group":
        adv = adv / (_nan_std(grouped, dim=1) + eps)  # [B, G] / [B, 1]
    elif scale == "batch":
        adv = adv / (_nan_std(grouped, dim=None) + eps)  # [B, G] / []
    adv = torch.where(nan, torch.zeros_like(adv), adv)
    return adv.reshape(-1)  # [B*G]


def zero_variance_groups(rewards: Tensor, group_size: int, atol: float = 0.0) -> Tensor:
    """Which groups carry no learning signal, for dynamic sampling (DAPO).

    Args:
        rewards: [B*G] group-contiguous rewards (see ``group_advantages``); NaN entries are ignored.
        group_size: G.
        atol: rewards within ``atol`` of each other count as equal (0: exact equality).

    Returns:
        BoolTensor [B], True where every (non-NaN) reward of the group is the same, so every advantage is
        0 and the group only dilutes the loss. Drop those groups with the keep-mask over completions
        ``~zero_variance_groups(r, G).repeat_interleave(G)`` ([B*G]).
    """
    grouped = _grouped(rewards, group_size)  # [B, G]
    nan = torch.isnan(grouped)
    hi = torch.where(nan, torch.full_like(grouped, -torch.inf), grouped).amax(dim=1)  # [B]
    lo = torch.where(nan, torch.full_like(grouped, torch.inf), grouped).amin(dim=1)  # [B]
    # An all-NaN group has hi = -inf < lo = +inf: no signal either.
    return (hi - lo) <= atol  # [B]


# ---------------------------------------------------------------------------------------------------
# Loss aggregations: per-token loss [N, T] (already 0 at padding) + mask [N, T] -> scalar
# ---------------------------------------------------------------------------------------------------

LossAgg = Callable[[Tensor, Tensor, Normalisers], Tensor]
LOSS_AGGREGATIONS: dict[str, LossAgg] = {}


def register_loss_agg(name: str) -> Callable[[LossAgg], LossAgg]:
    """Register ``fn(per_token [N, T], mask [N, T] float 0/1, norm: Normalisers) -> []`` under ``name``."""

    def deco(fn: LossAgg) -> LossAgg:
        if name in LOSS_AGGREGATIONS:
            raise ValueError(f"loss aggregation {name!r} is already registered")
        LOSS_AGGREGATIONS[name] = fn
        return fn

    return deco


@register_loss_agg("token_mean")
def token_mean(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """DAPO: every valid token weighs the same. ``sum(loss * mask) / total_tokens``.

    ``total_tokens`` defaults to ``mask.sum()`` (clamped to 1 so an all-padding batch gives 0, not NaN).
    """
    denom = norm.total_tokens if norm.total_tokens is not None else mask.sum().clamp(min=1.0)
    return per_token.sum() / denom


@register_loss_agg("seq_mean_token_mean")
def seq_mean_token_mean(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """Original GRPO: mean over sequences of each sequence's token mean.

    ``sum_i (sum_t loss[i, t] / len_i) / total_seqs``; ``total_seqs`` defaults to N (every row counts,
    a fully-masked row adds 0 to the numerator).
    """
    seq_means = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # [N]
    denom = norm.total_seqs if norm.total_seqs is not None else per_token.shape[0]
    return seq_means.sum() / denom


@register_loss_agg("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(per_token: Tensor, mask: Tensor, norm: Normalisers) -> Tensor:
    """Dr. GRPO: a constant normaliser. ``sum(loss * mask) / (total_seqs * max_completion_length)``.

    ``total_seqs`` defaults to N; ``max_completion_length`` is required.
    """
    if norm.max_completion_length is None:
        raise ValueError("aggregation 'seq_mean_token_sum_norm' needs max_completion_length (grpo config)")
    n = norm.total_seqs if norm.total_seqs is not None else per_token.shape[0]
    return per_token.sum() / (n * norm.max_completion_length)


# ---------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:
    """Per-token k3 estimator of KL(pi || pi_ref): ``exp(ref - logp) - (ref - logp) - 1`` (>= 0, 0 at equality).

    Shapes: any, broadcast together (usually [N, T]).
    """
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1


def _prepare(logprobs: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, torch.dtype]:
    """Bool and float views of ``mask`` [N, T], and the (>= float32) dtype the loss is computed in."""
    if mask.shape != logprobs.shape or logprobs.dim() != 2:
        raise ValueError(
            f"logprobs and mask must both be [N, T], got {tuple(logprobs.shape)} and {tuple(mask.shape)}"
        )
    valid = mask.bool()  # [N, T], non-zero -> True
    dtype = torch.promote_types(logprobs.dtype, torch.float32)  # bf16 -> fp32; fp64 stays fp64
    return valid, valid.to(dtype), dtype


def _masked_mean(x: Tensor, valid: Tensor) -> float:
    """Mean of ``x`` over valid positions as a detached float (0.0 when there are none)."""
    n = valid.sum()
    if n == 0:
        return 0.0
    return float((torch.where(valid, x.detach(), torch.zeros_like(x)).sum() / n).item())


def policy_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    ref_logprobs: Tensor | None = None,
    beta: float = 0.0,
    aggregation: str = "token_mean",
    max_completion_length: int | None = None,
    importance_level: str = "token",
    total_tokens: float | Tensor | None = None,
    total_seqs: float | Tensor | None = None,
    token_weights: Tensor | None = None,
) -> LossOutput:
    """Clipped surrogate loss of GRPO with clip-higher, optional k3 KL, and a registered aggregation.

    Per valid token, with ``ratio = exp(logprobs - old_logprobs)`` and ``A`` the sequence's advantage::

        loss[i, t] = -min(ratio * A, clamp(ratio, 1 - epsilon_low, 1 + epsilon_high) * A) + beta * kl_k3

    Args:
        logprobs: [N, T] log-probs of the sampled tokens under the current policy (with grad).
        old_logprobs: [N, T] log-probs under the rollout policy (no grad; see the module docstring
            for mu == 1).
        advantages: [N] one advantage per sequence, broadcast over its tokens.
        mask: [N, T] bool or float; non-zero marks a completion token that counts. Padding positions may
            hold anything (even inf/NaN): they never reach the loss or its gradient.
        epsilon_low, epsilon_high: clip range [1 - epsilon_low, 1 + epsilon_high]; a larger
            epsilon_high (DAPO clip-higher, e.g. 0.28) lets low-probability tokens grow further.
        ref_logprobs: [N, T] log-probs under the frozen reference. When given, the mean k3 KL is
            reported as ``metrics["kl"]``; it enters the loss only when beta > 0.
        beta: KL coefficient; beta > 0 requires ref_logprobs.
        aggregation: a name in ``LOSS_AGGREGATIONS``: ``token_mean`` (DAPO), ``seq_mean_token_mean``
            (original GRPO), ``seq_mean_token_sum_norm`` (Dr. GRPO, needs max_completion_length).
        max_completion_length: the config's completion budget, Dr. GRPO's constant normaliser.
        importance_level: ``"token"`` (GRPO: one ratio per token) or ``"sequence"`` (GSPO: one ratio
            per sequence, ``exp(mean over its valid tokens of (logprobs - old_logprobs))``, clipped with
            the same epsilons and broadcast to its tokens; GSPO uses much smaller epsilons, ~3e-4).
        total_tokens: valid tokens in the whole optimizer step (all micro-batches, all ranks), a float or
            a 0-dim tensor (e.g. straight from an all-reduce); ``token_mean`` divides by it instead of
            ``mask.sum()``.
        total_seqs: sequences in the whole optimizer step; ``seq_mean_token_mean`` and
            ``seq_mean_token_sum_norm`` divide by it (times max_completion_length for the latter)
            instead of N. With either given, the trainer sums micro-batch losses (module docstring).
        token_weights: [N, T] no-grad weights of each token's surrogate term (truncated importance
            sampling, ``tis_weights``); the KL term is not weighted. None = 1 everywhere.

    Returns:
        LossOutput(loss [], metrics) with detached float metrics, means over this call's valid tokens:
        ``clip_frac_low`` (ratio < 1 - epsilon_low with A < 0), ``clip_frac_high`` (ratio >
        1 + epsilon_high with A > 0), ``clip_frac`` (either: the tokens whose gradient the clip
        zeroes, as TRL defines it), ``ratio_mean``, ``kl`` (only with ref_logprobs), ``adv_abs_mean``
        and ``adv_abs_max`` (over the N sequences), ``tokens`` (valid tokens in this call).
    """
    if aggregation not in LOSS_AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {sorted(LOSS_AGGREGATIONS)}, got {aggregation!r}")
    if importance_level not in IMPORTANCE_LEVELS:
        raise ValueError(f"importance_level must be one of {IMPORTANCE_LEVELS}, got {importance_level!r}")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs (set beta 0 to train without a reference model)")
    valid, maskf, dtype = _prepare(logprobs, mask)  # [N, T] bool, [N, T] float
    n_seqs = logprobs.shape[0]
    if old_logprobs.shape != logprobs.shape:
        raise ValueError(f"old_logprobs must be {tuple(logprobs.shape)}, got {tuple(old_logprobs.shape)}")
    if advantages.shape != (n_seqs,):
        raise ValueError(f"advantages must be [N] = [{n_seqs}], got {tuple(advantages.shape)}")

    zeros = torch.zeros((), dtype=dtype, device=logprobs.device)
    logp = logprobs.to(dtype)
    # Padding is zeroed BEFORE exp, so garbage there cannot overflow to inf and poison the gradient.
    log_ratio = torch.where(valid, logp - old_logprobs.to(dtype), zeros)  # [N, T]
    if importance_level == "sequence":
        seq_log_ratio = log_ratio.sum(dim=1) / maskf.sum(dim=1).clamp(min=1.0)  # [N]
        ratio = torch.exp(seq_log_ratio)[:, None].expand_as(log_ratio)  # [N, T]
    else:
        ratio = torch.exp(log_ratio)  # [N, T]
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # [N, T]
    adv = advantages.to(dtype)[:, None]  # [N, 1]
    per_token = -torch.minimum(ratio * adv, clipped * adv)  # [N, T]
    if token_weights is not None:
        if token_weights.shape != logprobs.shape:
            raise ValueError(
                f"token_weights must be {tuple(logprobs.shape)}, got {tuple(token_weights.shape)}"
            )
        per_token = per_token * torch.where(valid, token_weights.detach().to(dtype), zeros)

    metrics: dict[str, float] = {}
    if ref_logprobs is not None:
        if ref_logprobs.shape != logprobs.shape:
            raise ValueError(f"ref_logprobs must be {tuple(logprobs.shape)}, got {tuple(ref_logprobs.shape)}")
        # padding zeroed on both sides first, so kl is 0 there whatever it held
        kl = kl_k3(
            torch.where(valid, logp, zeros), torch.where(valid, ref_logprobs.to(dtype), zeros)
        )  # [N, T]
        if beta > 0:
            per_token = per_token + beta * kl
        metrics["kl"] = _masked_mean(kl, valid)
    per_token = torch.where(valid, per_token, zeros)  # [N, T]

    norm = Normalisers(total_tokens, total_seqs, max_completion_length)
    loss = LOSS_AGGREGATIONS[aggregation](per_token, maskf, norm)  # []

    low = (ratio < 1 - epsilon_low) & (adv < 0)  # [N, T]
    high = (ratio > 1 + epsilon_high) & (adv > 0)  # [N, T]
    metrics.update(
        clip_frac_low=_masked_mean(low.to(dtype), valid),
        clip_frac_high=_masked_mean(high.to(dtype), valid),
        clip_frac=_masked_mean((low | high).to(dtype), valid),
        ratio_mean=_masked_mean(ratio, valid),
        adv_abs_mean=float(advantages.detach().abs().mean().item()) if n_seqs else 0.0,
        adv_abs_max=float(advantages.detach().abs().max().item()) if n_seqs else 0.0,
        tokens=float(valid.sum().item()),
    )
    return LossOutput(loss, metrics)


def tis_weights(old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor, cap: float) -> Tensor:
    """Truncated importance-sampling weights for rollouts sampled by another engine (vLLM) or from
    older weights: ``min(exp(old_logprobs - rollout_logprobs), cap)`` per token (Yao et al., "Your
    efficient RL framework secretly brings you off-policy RL training", as verl's ``tis_imp_ratio_cap``).

    Args:
        old_logprobs: [N, T] the trainer's log-probs of the sampled tokens under the rollout-time policy.
        rollout_logprobs: [N, T] the log-probs the rollout engine reported for the same tokens.
        mask: [N, T] bool or float, non-zero on completion tokens.
        cap: the truncation, > 0.

    Returns:
        [N, T] detached weights, 0 on padding (whatever the inputs hold there).
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0, got {cap}")
    valid, _, dtype = _prepare(old_logprobs, mask)
    if rollout_logprobs.shape != old_logprobs.shape:
        raise ValueError(
            f"rollout_logprobs must be {tuple(old_logprobs.shape)}, got {tuple(rollout_logprobs.shape)}"
        )
    zeros = torch.zeros((), dtype=dtype, device=old_logprobs.device)
    log_w = torch.where(valid, old_logprobs.detach().to(dtype) - rollout_logprobs.detach().to(dtype), zeros)
    return torch.where(valid, torch.exp(log_w).clamp(max=cap), zeros)  # [N, T]


def sft_loss(logprobs: Tensor, mask: Tensor, *, total_tokens: float | Tensor | None = None) -> LossOutput:
    """Negative mean log-likelihood of the answer tokens (cross-entropy on answer tokens only).

    Args:
        logprobs: [N, T] log-probs of the target tokens (with grad).
        mask: [N, T] bool or float, non-zero on answer tokens (prompt and padding excluded).
        total_tokens: answer tokens in the whole optimizer step; divides instead of ``mask.sum()``,
            with the same summing contract as ``policy_loss`` (module docstring).

    Returns:
        LossOutput(loss [], metrics): ``nll`` (mean over this call's answer tokens) and ``tokens``.
    """
    valid, maskf, dtype = _prepare(logprobs, mask)
    nll = torch.where(valid, -logprobs.to(dtype), torch.zeros((), dtype=dtype, device=logprobs.device))
    loss = token_mean(nll, maskf, Normalisers(total_tokens=total_tokens))
    metrics = {"nll": _masked_mean(nll, valid), "tokens": float(valid.sum().item())}
    return LossOutput(loss, metrics)
