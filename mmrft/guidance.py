"""Demonstration-guided GRPO (``grpo.guidance: reference``): a group that found no good answer gets one.

When every completion of a group scores below ``grpo.guidance_threshold`` and the record has a reference
answer (its SFT target: the ``response`` column, else the answer built from ``solution``), the group's
LAST completion is replaced by that reference answer and scored like any other, so the group has reward
variance and the policy is pushed toward the answer it could not find (Prefix-RFT, LUFFY).

The reference tokens were not sampled from the policy: they are off-policy. The rule implemented is
LUFFY's (Yan et al. 2025, "Learning to Reason under Off-Policy Guidance"): the importance ratio of an
off-policy token is taken against a behaviour probability of 1, so the ratio is the token's CURRENT
probability ``p = exp(logp)``; it is not clipped (there is no old policy to stay near); and it is
shaped, ``f(p) = p / (p + gamma)`` (``grpo.guidance_gamma``, 0.1 in LUFFY), which keeps the gradient of
the low-probability tokens of the demonstration from vanishing (``d f / d logp = gamma p / (p + gamma)^2``
peaks at ``p = gamma`` where the plain ratio's, ``p``, would all but vanish). Per token::

    loss[i, t] = -A_i * p / (p + gamma)  (+ beta * k3 KL when grpo.beta > 0)

aggregated with the same ``grpo.loss_aggregation`` and the same global normalisers as the on-policy
tokens, so the two parts add up to one loss. Why this rule: the reference answer has essentially zero
probability under the rollout policy, so a PPO ratio against its (never computed) rollout log-probs
would be huge and clipped to nothing; LUFFY's rule is the one measured to keep learning from such
tokens without collapsing entropy.

``apply_reference`` edits the rollout and scores before advantages; ``offpolicy_loss`` is pure tensor
code. With ``grpo.guidance: none`` the trainer calls neither: the step is the plain GRPO step.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mmrft.data import encode_targets, sft_target
from mmrft.grpo import LOSS_AGGREGATIONS, LossOutput, Normalisers, kl_k3
from mmrft.rollout import Rollout
from mmrft.scoring import RewardStack, ScoredRollout


@dataclass
class Guided:
    """The rollout and scores with the references in place; ``off_policy`` [N] bool marks the replaced
    completions; ``fired``: groups that got a reference, of ``groups``."""

    rollout: Rollout
    scored: ScoredRollout
    off_policy: Tensor
    fired: int
    groups: int


def _pad_right(x: Tensor, T: int, value: float | int) -> Tensor:
    """[N, t] -> [N, T] (T >= t), the new columns filled with ``value``."""
    if x.shape[1] >= T:
        return x.clone()
    return torch.cat([x, x.new_full((x.shape[0], T - x.shape[1]), value)], dim=1)


def apply_reference(
    rollout: Rollout, scored: ScoredRollout, samples: list, stack: RewardStack, tokenizer,
    prompt_style: str, threshold: float,
) -> Guided:  # fmt: skip
    """Replace the last completion of every all-below-``threshold`` group that has a reference answer.

    samples: the B prompts' Samples (group b is completions b*G .. b*G + G - 1). The reference is
    encoded like an SFT target (answer tokens + ``<|im_end|>``) and scored by ``stack``.
    """
    G, N = rollout.group_size, len(rollout.texts)
    B = N // G
    totals = scored.total.view(B, G)  # [B, G]
    below = (totals.isnan() | (totals < threshold)).all(dim=1)  # [B]
    fire, refs = [], []
    for b in below.nonzero().flatten().tolist():
        try:
            refs.append(sft_target(samples[b], prompt_style))
        except ValueError:  # a task with no reference answer and no `response` column
            continue
        fire.append(b)
    device = rollout.completion_ids.device
    off = torch.zeros(N, dtype=torch.bool, device=device)
    if not fire:
        return Guided(rollout, scored, off, 0, B)
    rows = torch.tensor([b * G + G - 1 for b in fire], device=device)  # [F]
    ids, mask = encode_targets(tokenizer, refs, device)  # [F, L]
    T = max(rollout.completion_ids.shape[1], ids.shape[1])
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else int(ids[0, -1])
    completion_ids = _pad_right(rollout.completion_ids, T, pad)  # [N, T]
    completion_mask = _pad_right(rollout.completion_mask, T, 0)  # [N, T]
    completion_ids[rows] = _pad_right(ids, T, pad)
    completion_mask[rows] = _pad_right(mask.to(completion_mask.dtype), T, 0)
    logprobs = None
    if rollout.logprobs is not None:  # the sampler's log-probs mean nothing for tokens it did not sample
        logprobs = _pad_right(rollout.logprobs, T, 0.0)
        logprobs[rows] = 0.0
    truncated = rollout.truncated.clone()
    truncated[rows] = False
    texts = list(rollout.texts)
    for b, text in zip(fire, refs):
        texts[b * G + G - 1] = text
    new_rollout = replace(
        rollout, completion_ids=completion_ids, completion_mask=completion_mask, texts=texts,
        truncated=truncated, logprobs=logprobs,
    )  # fmt: skip
    ref_scores = stack(refs, [samples[b] for b in fire])
    total, per = scored.total.clone(), scored.per_reward.clone()
    cpu_rows = rows.cpu()
    total[cpu_rows] = ref_scores.total
    per[:, cpu_rows] = ref_scores.per_reward
    off[rows] = True
    # scored.metrics stay those of the policy's own completions
    return Guided(new_rollout, replace(scored, total=total, per_reward=per), off, len(fire), B)


def offpolicy_loss(
    logprobs: Tensor, advantages: Tensor, mask: Tensor, *, gamma: float = 0.1, aggregation: str = "token_mean",
    ref_logprobs: Tensor | None = None, beta: float = 0.0, max_completion_length: int | None = None,
    total_tokens: float | Tensor | None = None, total_seqs: float | Tensor | None = None,
) -> LossOutput:  # fmt: skip
    """LUFFY's loss on off-policy tokens (module docstring): ``-A * p / (p + gamma)`` per token.

    logprobs: [N, T] current log-probs (with grad); advantages: [N]; mask: [N, T], non-zero on the
    off-policy tokens only. Normalisers as in ``policy_loss`` (pass the step's global counts, which
    include these tokens). Metrics: ``offpolicy_prob`` (mean p) and ``offpolicy_tokens``.
    """
    valid = mask.bool()  # [N, T]
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    zeros = torch.zeros((), dtype=dtype, device=logprobs.device)
    logp = torch.where(valid, logprobs.to(dtype), zeros)  # padding zeroed before exp
    p = torch.exp(logp)  # [N, T], the ratio against a behaviour probability of 1
    per_token = -(p / (p + gamma)) * advantages.to(dtype)[:, None]  # [N, T], no clipping
    if beta > 0:
        if ref_logprobs is None:
            raise ValueError("beta > 0 needs ref_logprobs")
        per_token = per_token + beta * kl_k3(logp, torch.where(valid, ref_logprobs.to(dtype), zeros))
    per_token = torch.where(valid, per_token, zeros)
    norm = Normalisers(total_tokens, total_seqs, max_completion_length)
    loss = LOSS_AGGREGATIONS[aggregation](per_token, valid.to(dtype), norm)
    n = valid.sum()
    prob = float((torch.where(valid, p.detach(), zeros).sum() / n).item()) if n else 0.0
    return LossOutput(loss, {"offpolicy_prob": prob, "offpolicy_tokens": float(n.item())})
