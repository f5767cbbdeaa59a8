"""The rollout engine the trainer generates with (``rollout.engine``), its weight-sync cadence, and the
train/inference mismatch metrics.

    engine = build_engine(cfg, model_path, processor, distributed)   # HFEngine or VLLMRolloutEngine
    ro = engine.generate(policy, processor, samples, prompts, G, params, seeds, feats)  # Rollout + logprobs
    ... loss, optimizer step(s) ...
    metrics.update(engine.after_step(policy, grpo_step))              # sync on cadence; rollout/* metrics

``hf`` is mmrft's own decode loop on the training policy (always on-policy). ``vllm`` is a colocated
vLLM ``LLM`` (``mmrft.vllm_engine``): its weights are pushed before its first rollout (the policy may
differ from the checkpoint it started from: SFT warm-up, resume) and after every ``rollout.sync_every``
GRPO steps, so a rollout is at most ``sync_every - 1`` steps behind the policy. ``rollout/weights_lag``
logs how many; ``rollout/sync_s`` the seconds the pushes of the step took.

Mismatch (``MismatchMeter``): per completion token ``d = logp_engine - logp_trainer`` (the trainer's
log-prob under the policy at rollout time, ``old_logprobs``), logged as ``rollout/logprob_diff_mean``
(mean |d|), ``rollout/logprob_diff_max`` (max |d|) and ``rollout/token_prob_ratio`` (mean exp(|d|)),
over all ranks' counted tokens; with ``grpo.tis_cap`` also ``rollout/tis_weight_mean`` and
``rollout/tis_capped_frac`` (tokens whose weight the cap truncated).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from data_pipelines.sample import Sample
from mmrft.config import Config, ConfigError
from mmrft.models.forward import PromptBatch, VisionFeatures
from mmrft.rollout import Rollout, SamplingParams, generate

__all__ = ["HFEngine", "MismatchMeter", "VLLMRolloutEngine", "build_engine"]


class HFEngine:
    """mmrft's decode loop on the training policy itself: on-policy, nothing to sync."""

    name = "hf"

    def generate(
        self,
        policy,
        processor,
        samples: list[Sample],
        prompts: PromptBatch,
        group_size: int,
        params: SamplingParams,
        seeds: list[int],
        feats: VisionFeatures | None = None,
        all_done: Callable[[bool], bool] | None = None,
    ) -> Rollout:
        return generate(policy, processor, prompts, group_size, params, seeds, feats=feats, all_done=all_done)

    def after_step(self, policy, grpo_step: int) -> dict[str, float]:
        return {}


class VLLMRolloutEngine:
    """A colocated vLLM engine, synced with the policy every ``sync_every`` GRPO steps.

    Every rank holds its own engine (``external_launcher`` under torchrun) and syncs at the same steps
    (gathering FSDP2 shards is a collective).
    """

    name = "vllm"

    def __init__(self, engine, sync_every: int):
        self.engine = engine  # mmrft.vllm_engine.VLLMEngine
        self.sync_every = sync_every
        self.synced = False  # the engine still holds the checkpoint it was started from
        self.lag = 0  # optimizer-step rounds (GRPO steps) the engine's weights are behind the policy
        self._sync_s = 0.0
        self._rollout_lag = 0

    def sync(self, policy) -> None:
        from mmrft.vllm_engine import sync_weights

        stats = sync_weights(self.engine, policy)
        self.engine.sleep()  # sleep_mode: nothing generates until the next rollout
        self.synced, self.lag = True, 0
        self._sync_s += stats.seconds

    def generate(
        self,
        policy,
        processor,
        samples: list[Sample],
        prompts: PromptBatch,
        group_size: int,
        params: SamplingParams,
        seeds: list[int],
        feats: VisionFeatures | None = None,  # the step's vision features: vLLM encodes the images itself
        all_done: Callable[[bool], bool] | None = None,
    ) -> Rollout:
        if not self.synced:
            self.sync(policy)
        self._rollout_lag = self.lag
        out = self.engine.generate(samples, prompts, group_size, params, seeds)
        return dataclasses.replace(out.rollout, logprobs=out.engine_logprobs)

    def after_step(self, policy, grpo_step: int) -> dict[str, float]:
        """After the step's optimizer update(s): the policy moved one step; push it on the cadence."""
        self.lag += 1
        if (grpo_step + 1) % self.sync_every == 0:
            self.sync(policy)
        metrics = {"rollout/weights_lag": float(self._rollout_lag), "rollout/sync_s": self._sync_s}
        self._sync_s = 0.0
        return metrics


def build_engine(cfg: Config, model_path: Path, processor, distributed: bool):
    """The ``rollout.engine`` the config asks for; the vLLM engine starts from ``model_path`` (the
    checkpoint the policy was loaded from). ``distributed``: more than one training process."""
    r = cfg.rollout
    if r.engine == "hf":
        return HFEngine()
    from mmrft.vllm_engine import VLLMEngine, VLLMEngineConfig

    fields = [f.name for f in dataclasses.fields(VLLMEngineConfig)]
    engine_cfg = VLLMEngineConfig(**{name: getattr(r, name) for name in fields})
    try:
        engine = VLLMEngine(
            model_path,
            processor,
            engine_cfg,
            max_prompt_length=r.max_prompt_length,
            max_new_tokens=r.max_completion_length,
            min_pixels=cfg.data.min_pixels,
            max_pixels=cfg.data.max_pixels,
            distributed=distributed,
            seed=cfg.train.seed,
        )
    except ValueError as e:  # the engine's one-line errors name the rollout.* field
        raise ConfigError(" ".join(str(e).split())) from None
    return VLLMRolloutEngine(engine, r.sync_every)


class MismatchMeter:
    """Accumulates the train/inference mismatch of one step over its micro-batches (this rank); ``reduce``
    combines the ranks (see the module docstring for the metrics)."""

    def __init__(self, tis_cap: float | None = None):
        self.tis_cap = tis_cap
        # sum |d|, max |d|, sum exp(|d|), tokens, sum of TIS weights, capped tokens
        self.acc = [0.0] * 6

    def add(self, trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor) -> None:
        """trainer_logprobs, engine_logprobs, mask: [N, T]; only positions where mask is non-zero count."""
        valid = mask.bool()
        d = engine_logprobs.detach().double()[valid] - trainer_logprobs.detach().double()[valid]  # [n]
        if d.numel() == 0:
            return
        a = self.acc
        a[0] += float(d.abs().sum())
        a[1] = max(a[1], float(d.abs().max()))
        a[2] += float(torch.exp(d.abs()).sum())
        a[3] += d.numel()
        if self.tis_cap is not None:
            w = torch.exp(-d)  # exp(logp_trainer - logp_engine), before the cap
            a[4] += float(w.clamp(max=self.tis_cap).sum())
            a[5] += float((w > self.tis_cap).sum())

    def reduce(self, gather: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """The step's metrics over all ranks; ``gather`` concatenates every rank's [6] float64 CPU tensor
        into [W*6] (e.g. ``mmrft.distributed.all_gather_tensor``), None for one process. {} when no
        token counted anywhere."""
        mine = torch.tensor(self.acc, dtype=torch.float64)
        acc = (mine if gather is None else gather(mine)).view(-1, 6)
        total = acc.sum(0)
        tokens = float(total[3])
        if tokens == 0:
            return {}
        out = {
            "rollout/logprob_diff_mean": float(total[0]) / tokens,
            "rollout/logprob_diff_max": float(acc[:, 1].max()),
            "rollout/token_prob_ratio": float(total[2]) / tokens,
        }
        if self.tis_cap is not None:
            out["rollout/tis_weight_mean"] = float(total[4]) / tokens
            out["rollout/tis_capped_frac"] = float(total[5]) / tokens
        return out
