"""The pieces of one training step, typed: the group layout, micro-batches, and the log-prob forwards.

A GRPO step holds B prompts and G completions each, N = B*G sequences, group-contiguous: sequence
``n = b*G + g`` is completion g of prompt b. ``GroupLayout`` is the one place that arithmetic lives.
``micro_batches`` cuts the step into ``MicroBatch``es of whole groups (a prompt sub-batch, the indices of
its sequences, their completion ids and masks, advantages, and the step's vision features), and
``policy_logprobs(model, micro_batch)`` is the one forward every phase calls: the reference, the old
policy and each of the mu updates (and the SFT step, with G = 1)::

    layout = GroupLayout(prompts.size, G)
    feats = step_features(policy, prompts)                       # the vision tower once, no grad
    for mb in micro_batches(layout, prompts, ids, mask, loss_mask, adv, per_chunk, feats, temperature):
        ref = reference_logprobs(policy, reference, mb)            # no grad
        lp = policy_logprobs(policy, mb)                           # with grad

Vision features: computed once per step without grad (``step_features``), they serve generation, the
old-policy forward and, when the vision tower is frozen (``vision_frozen``), the reference and the policy
forwards too; a trainable tower gets its features recomputed with grad per micro-batch. With LoRA and no
separate reference model, the reference is the policy with its adapter disabled (peft's
``disable_adapter``), never a second copy of the weights.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from mmrft.models.forward import (
    PromptBatch,
    VisionFeatures,
    completion_logprobs,
    encode_vision,
    vision_frozen,
)


@dataclass(frozen=True)
class GroupLayout:
    """N = ``prompts`` x ``group_size`` sequences, group-contiguous (prompt b owns b*G .. b*G+G-1)."""

    prompts: int  # B
    group_size: int  # G

    @property
    def sequences(self) -> int:
        return self.prompts * self.group_size

    def seq(self, prompt: int, member: int) -> int:
        """The index of completion ``member`` of prompt ``prompt``."""
        return prompt * self.group_size + member

    def seqs_of(self, prompts: list[int]) -> Tensor:
        """[len(prompts) * G] the sequence indices of those prompts' groups, in that order."""
        G = self.group_size
        return torch.tensor([b * G + g for b in prompts for g in range(G)], dtype=torch.long)

    def seq_to_prompt(self, n_prompts: int | None = None) -> Tensor:
        """[n * G] which of ``n_prompts`` (default: all) prompts each sequence continues."""
        n = self.prompts if n_prompts is None else n_prompts
        return torch.arange(n).repeat_interleave(self.group_size)

    def per_sequence(self, per_prompt: Tensor) -> Tensor:
        """[B, ...] -> [N, ...]: each prompt's value for each of its G sequences."""
        return per_prompt.repeat_interleave(self.group_size, dim=0)

    def groups(self, per_sequence: Tensor) -> Tensor:
        """[N] -> [B, G] (a view)."""
        return per_sequence.view(-1, self.group_size)

    def chunks(self, prompts_per_chunk: int) -> list[list[int]]:
        """Prompt indices cut into consecutive micro-batches of at most ``prompts_per_chunk`` whole groups."""
        size = max(1, prompts_per_chunk)
        return [list(range(i, min(i + size, self.prompts))) for i in range(0, self.prompts, size)]


@dataclass
class MicroBatch:
    """Whole groups of a step: n = len(prompts) x G sequences.

    prompt_index: which of the step's prompts ``prompts`` holds. prompts: the prompt sub-batch. seqs: [n] the sequences' indices in the step.
    seq_to_prompt: [n] index into ``prompts``. completion_ids / completion_mask: [n, T] (the forward's
    mask: every generated token). loss_mask: [n, T] float, the tokens that count in the loss (the
    completion mask with dropped groups zeroed). advantages: [n]. feats: the prompts' vision features
    computed once without grad (None: compute them in the forward). temperature: the rollout's, by
    which logits are divided.
    """

    prompt_index: list[int]
    prompts: PromptBatch
    seqs: Tensor
    seq_to_prompt: Tensor
    completion_ids: Tensor
    completion_mask: Tensor
    loss_mask: Tensor
    advantages: Tensor
    feats: VisionFeatures | None = None
    temperature: float = 1.0

    @property
    def tokens(self) -> float:
        """Tokens that count in the loss."""
        return float(self.loss_mask.sum())


def micro_batches(
    layout: GroupLayout,
    prompts: PromptBatch,
    completion_ids: Tensor,
    completion_mask: Tensor,
    loss_mask: Tensor,
    advantages: Tensor,
    prompts_per_chunk: int,
    feats: VisionFeatures | None = None,
    temperature: float = 1.0,
) -> list[MicroBatch]:
    """The step's [N, ...] tensors cut into micro-batches of ``prompts_per_chunk`` whole groups."""
    out = []
    device = completion_ids.device
    for chunk in layout.chunks(prompts_per_chunk):
        seqs = layout.seqs_of(chunk).to(device)
        out.append(MicroBatch(
            prompt_index=chunk, prompts=prompts.select(chunk), seqs=seqs,
            seq_to_prompt=layout.seq_to_prompt(len(chunk)).to(device),
            completion_ids=completion_ids[seqs], completion_mask=completion_mask[seqs],
            loss_mask=loss_mask[seqs], advantages=advantages[seqs],
            feats=feats.select(chunk) if feats is not None else None, temperature=temperature,
        ))  # fmt: skip
    return out


def step_features(model, prompts: PromptBatch) -> VisionFeatures:
    """The prompts' vision features, once per step, without grad."""
    with torch.no_grad():
        return encode_vision(model, prompts)


def policy_logprobs(model, mb: MicroBatch) -> Tensor:
    """Log-probs [n, T] of the micro-batch's completions under ``model`` (grad flows if enabled).

    The micro-batch's cached features serve every no-grad forward, and a forward with grad when the
    vision tower is frozen; otherwise the features are recomputed here (with grad, so the tower trains).
    """
    feats = mb.feats
    if feats is None or (torch.is_grad_enabled() and not vision_frozen(model)):
        feats = encode_vision(model, mb.prompts)
    return completion_logprobs(
        model, mb.prompts, feats, mb.seq_to_prompt, mb.completion_ids, mb.completion_mask, mb.temperature
    )


def has_adapter(model) -> bool:
    """True when ``model`` (a VLMOps or a Hugging Face model) carries a peft adapter."""
    return hasattr(getattr(model, "hf", model), "disable_adapter")


@contextlib.contextmanager
def adapter_disabled(model) -> Iterator[None]:
    """The base model's forward while the block runs (peft's ``disable_adapter``)."""
    with getattr(model, "hf", model).disable_adapter():
        yield


def reference_features(
    policy, reference, prompts: PromptBatch, policy_feats: VisionFeatures
) -> VisionFeatures:
    """The reference's vision features for the step: the policy's when its tower is frozen (the same
    weights), else the reference's own tower once (the base tower under a disabled adapter)."""
    if vision_frozen(policy):
        return policy_feats
    if reference is not None:
        return step_features(reference, prompts)
    with adapter_disabled(policy):
        return step_features(policy, prompts)


def reference_logprobs(policy, reference, mb: MicroBatch, feats: VisionFeatures) -> Tensor:
    """Log-probs [n, T] under the frozen reference (no grad): ``reference`` when there is one, else
    the policy with its LoRA adapter disabled. ``feats``: the step's ``reference_features``."""
    feats = feats.select(mb.prompt_index)
    with torch.no_grad():
        if reference is not None:
            return policy_logprobs(reference, replace(mb, feats=feats))
        with adapter_disabled(policy):
            return policy_logprobs(policy, replace(mb, feats=feats))
