"""The training recipe: an optional SFT warm-up, then GRPO, each step spelled out below.

This is the only module that knows the order of a step. From Python:

    from mmrft.config import load_config
    from mmrft.trainer import train
    summary = train(load_config("configs/quickstart.yaml", ["train.output_dir=/tmp/run", "grpo.steps=3"]))

One GRPO step: sample B prompts (this rank's share) -> encode them once (vision tower once per image)
-> G completions each -> rewards -> group advantages (over the global batch) -> for each of mu
iterations: micro-batches of whole groups, loss normalised by global counts, backward -> gradient sync,
clip, AdamW, schedule. One SFT step: the same forward on reference answers, cross-entropy on answer tokens.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mmrft import checkpoint, distributed, guard, guidance, memory, rejection
from mmrft.config import Config, ConfigError, to_dict
from mmrft.data import build_datasets, encode_targets, sample_seed, sft_target, step_indices, write_synthetic
from mmrft.engines import MismatchMeter, build_engine
from mmrft.evaluation import evaluate
from mmrft.grpo import group_advantages, policy_loss, sft_loss, tis_weights, zero_variance_groups
from mmrft.metrics import StepMetrics, per_pass
from mmrft.models.forward import VLMOps
from mmrft.models.loading import load_model
from mmrft.rollout import Rollout, SamplingParams, encode_prompts
from mmrft.scoring import RewardStack
from mmrft.step import (
    GroupLayout,
    MicroBatch,
    micro_batches,
    policy_logprobs,
    reference_features,
    reference_logprobs,
    step_features,
)
from mmrft.tracking import LogPosition, Tracker, plot_rewards
from mmrft.watchdog import Watchdog, collective_limit


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _lr_lambda(warmup: int, total: int, min_ratio: float):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def _stage_lr(cfg: Config, stage: str) -> float:
    return {"sft": cfg.sft.lr, "rejection": cfg.rejection.sft_lr}.get(stage, cfg.train.lr)


def make_optimizer(model, cfg: Config, stage: str):
    """AdamW over trainable parameters and its warmup + cosine schedule, for one stage (``sft``,
    ``rejection``: one round's SFT, ``grpo``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    lr = _stage_lr(cfg, stage)
    steps = {"sft": cfg.sft.steps, "rejection": cfg.rejection.sft_steps}.get(
        stage, cfg.grpo.steps * cfg.grpo.num_iterations
    )
    opt = torch.optim.AdamW(
        params, lr=lr, betas=tuple(cfg.train.adam_betas), weight_decay=cfg.train.weight_decay
    )
    warmup = 0 if stage in ("sft", "rejection") else cfg.train.warmup_steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(warmup, steps, cfg.train.min_lr_ratio))
    return opt, sched


def follow_config(optimizer, scheduler, cfg: Config, stage: str) -> None:
    """After a checkpoint is loaded: the config's learning rate, betas and weight decay replace the ones
    stored with the optimizer (they differ only after --resume-force); the schedule position is kept."""
    lr = _stage_lr(cfg, stage)
    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
    for group, fn in zip(optimizer.param_groups, scheduler.lr_lambdas):
        group.update(initial_lr=lr, lr=lr * fn(scheduler.last_epoch))  # what LambdaLR itself computes
        group.update(betas=tuple(cfg.train.adam_betas), weight_decay=cfg.train.weight_decay)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]  # what get_last_lr() reports


def _apply_lora(model, cfg: Config):
    if cfg.model.lora_r <= 0:
        return model
    from peft import LoraConfig, get_peft_model

    lc = LoraConfig(
        r=cfg.model.lora_r,
        lora_alpha=cfg.model.lora_alpha,
        lora_dropout=cfg.model.lora_dropout,
        target_modules=list(cfg.model.lora_target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lc)


def _prepare_inputs(cfg: Config, run_dir: Path, info: distributed.DistInfo) -> tuple[Path, dict]:
    """Model path (building the tiny model if asked) and data files (writing the synthetic task if
    asked), made by rank 0 while the others wait. Both are built aside and renamed into place, so a
    kill leaves no half-built folder; a folder built for other settings is rebuilt."""
    model_path = Path(cfg.model.path) if cfg.model.path else run_dir / "model_init"
    files: dict[str, Any] = {
        "train": cfg.data.train_file,
        "eval": cfg.data.eval_file,
        "sft": cfg.data.sft_file,
    }
    if info.is_main:
        if cfg.model.path is None:
            from mmrft.models.tiny import build_tiny, is_tiny_build

            if not is_tiny_build(model_path, seed=cfg.model.tiny_seed, preset=cfg.model.tiny):
                build_tiny(model_path, seed=cfg.model.tiny_seed, preset=cfg.model.tiny, replace=True)
        if cfg.data.train_file is None:
            syn = write_synthetic(cfg, run_dir / "data")
            files["train"] = syn["train"]
            files["eval"] = files["eval"] or syn["eval"]
    distributed.barrier()
    if cfg.data.train_file is None:
        syn_dir = run_dir / "data"
        task = cfg.data.synthetic.task
        files["train"] = syn_dir / f"{task}_train.jsonl"
        files["eval"] = cfg.data.eval_file or syn_dir / f"{task}_heldout.jsonl"
    return model_path, files


class Trainer:
    """Holds what a step needs; ``run()`` is the loop."""

    watchdog: Watchdog | None = None  # set while run() runs
    _where = ""  # "grpo step 3": what the run is doing, for error messages
    _batch_ids: list[str] = []  # record ids of the current step's batch on this rank
    _last_bad = (math.nan, math.nan)  # (loss, grad_norm) of the last skipped update

    def __init__(self, cfg: Config, resume: bool = False, resume_force: bool = False):
        """``resume``: continue from the newest checkpoint that verifies (an error when there is none);
        ``resume_force``: resume even though fields that change training differ from the checkpoint's
        config (implies ``resume``). See docs/resuming.md."""
        self.cfg = cfg
        self.t0 = time.time()
        self.info = distributed.init(
            cfg.distributed.strategy, cfg.distributed.backend, cfg.train.device, cfg.distributed.timeout_s
        )
        self.run_dir = Path(cfg.train.output_dir)
        for field, value in (("train.prompts_per_step", cfg.train.prompts_per_step),
                             ("sft.batch_size", cfg.sft.batch_size)):  # fmt: skip
            if value % self.info.world_size:
                raise ConfigError(
                    f"{field}={value} must be divisible by the {self.info.world_size} processes"
                )
        self.total_steps = cfg.sft.steps + cfg.grpo.steps
        start = checkpoint.open_run(
            self.run_dir, to_dict(cfg), self.info, resume=resume or resume_force, force=resume_force,
            stages=(cfg.sft.steps, cfg.grpo.steps),
        )  # fmt: skip
        model_path, files = _prepare_inputs(cfg, self.run_dir, self.info)
        seed_everything(cfg.train.seed)  # after the inputs: the same state whether or not they were built
        loaded = load_model(
            model_path,
            device=self.info.device,
            dtype=cfg.model.dtype,
            compute_dtype=cfg.model.compute_dtype,
            attn_implementation=cfg.model.attn_implementation,
            with_reference=cfg.grpo.beta > 0 and cfg.model.lora_r <= 0,  # LoRA: the adapter disabled
            gradient_checkpointing=cfg.model.gradient_checkpointing,
            freeze_vision=cfg.model.freeze_vision,
            min_pixels=cfg.data.min_pixels,
            max_pixels=cfg.data.max_pixels,
        )
        self.processor = loaded.processor
        amp = loaded.compute_dtype
        self.policy = distributed.wrap(VLMOps(_apply_lora(loaded.policy, cfg), amp), self.info)
        self.reference = None
        if loaded.reference is not None:
            self.reference = distributed.wrap(VLMOps(loaded.reference, amp), self.info)
        self.rewards = RewardStack(cfg.rewards, self.info.device)
        self.data = build_datasets(cfg, files)
        self.engine = build_engine(cfg, model_path, self.processor, self.info.world_size > 1)
        self.state: dict[str, Any] = {"step": 0, "optimizer_stage": self.stage_of(0)}
        self.optimizer, self.scheduler = make_optimizer(self.policy, cfg, self.state["optimizer_stage"])
        if start is not None:
            saved = json.loads((start.path / "trainer_state.json").read_text())
            if saved["optimizer_stage"] != self.state["optimizer_stage"]:
                self.optimizer, self.scheduler = make_optimizer(self.policy, cfg, saved["optimizer_stage"])
            self.state = checkpoint.load(start.path, self.policy, self.optimizer, self.scheduler, self.info)
            follow_config(self.optimizer, self.scheduler, cfg, self.state["optimizer_stage"])
            if self.state["step"] < self.total_steps:  # a forced resume that added steps evaluates again
                self.state.pop("eval_after", None)
        logs = LogPosition(*self.state.pop("logs", (0, 0)))
        self.tracker = Tracker(
            self.run_dir, self.info.is_main, cfg.train.tensorboard, cfg.train.progress_bar, self.total_steps,
            sft_steps=cfg.sft.steps, resume=(self.state["step"], logs),
        )  # fmt: skip
        if self.info.is_main:
            for note in self.tracker.notes:
                checkpoint.say(f"warning: {note}")
        self.tracker.advance(self.state["step"])
        self._report_memory(amp or next(self.policy.parameters()).dtype)

    def _report_memory(self, compute_dtype: torch.dtype) -> None:
        """Every rank's memory at start-up (docs/metrics.md), printed once and written to memory.json."""
        mine = memory.startup_report(self.policy, self.reference, self.cfg, self.info, compute_dtype)
        with self._collective("the gather of memory reports"):
            reports = distributed.gather_objects(mine)
        if self.info.is_main:
            memory.write_reports(reports, self.run_dir / "memory.json")

    # ---- helpers -------------------------------------------------------------------------------
    def stage_of(self, step: int) -> str:
        return "sft" if step < self.cfg.sft.steps else "grpo"

    def _all_done(self, flag: bool) -> bool:
        return distributed.all_true(flag, self.info)

    def _phase(self, name: str | None, where: str = "") -> None:
        """Tell the watchdog which phase the run is in (generation, reward, update, eval; None: none);
        its limit is ``watchdog.<name>_s``."""
        if self.watchdog is not None:
            limit = getattr(self.cfg.watchdog, f"{name}_s") if name else 0.0
            self.watchdog.phase(name, where or self._where, limit, f"watchdog.{name}_s")

    def _collective(self, what: str):
        """Bound an explicit collective by ``watchdog.collective_s`` (and name a backend timeout)."""
        return collective_limit(
            what, self.cfg.watchdog.collective_s, self.cfg.distributed.timeout_s, self._where, self.info.rank
        )

    def _optimizer_step(self, loss: float) -> dict[str, float]:
        """Clip and apply the accumulated gradients, unless ``loss`` (global) or the gradient norm is not
        finite: then the update is skipped (gradients dropped, weights untouched) and counted (``guard``)."""
        distributed.reduce_gradients(self.policy, self.info)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.cfg.train.max_grad_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.cfg.train.max_grad_norm)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
        norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        lr = self.scheduler.get_last_lr()[0]
        if guard.record_update(self.state, loss, norm):
            self.optimizer.step()
            with self._collective("the weight check"):
                finite = distributed.all_true(guard.local_weights_finite(params), self.info)
            if not finite:
                raise guard.poisoned_weights_error(self._where, loss, norm, self.run_dir)
        else:
            self._last_bad = (loss, norm)
            if self.info.is_main:
                warning = guard.skipped_warning(
                    self.state, self._where, loss, norm, self.cfg.train.max_bad_steps
                )
                tqdm.write(warning, file=sys.stderr)  # above the progress bar, not inside its line
        with warnings.catch_warnings():  # a skipped first update is no misuse: the lr follows the step index
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"grad_norm": norm, "lr": lr, "skipped_steps": float(self.state.get("skipped_steps", 0))}

    def _stop_if_diverged(self, step: int, stage: str) -> None:
        """More than ``train.max_bad_steps`` updates in a row skipped: save the last good state (the
        skipped updates changed nothing, and every applied one left finite weights) and stop."""
        if not guard.diverged(self.state, self.cfg.train.max_bad_steps):
            return
        with self._collective("the gather of batch ids"):
            ids = [i for part in distributed.gather_objects(list(self._batch_ids)) for i in part]
        error = guard.diverged_error(
            self.state,
            self._last_bad,
            self.cfg.train.max_bad_steps,
            stage,
            self._where,
            ids,
            self.run_dir / "checkpoints",
            step + 1,
        )
        self.state["bad_in_a_row"] = 0  # a run resumed from here starts a fresh count
        self._phase(None)
        self.save(step + 1)
        raise error

    # ---- one SFT step ----------------------------------------------------------------------------
    def sft_step(self, step: int) -> dict[str, float]:
        cfg, info = self.cfg, self.info
        self._phase("update")
        ds = self.data.sft or self.data.train
        n = len(ds)
        if self.data.sft is None and cfg.data.train_file is None:
            n = min(n, cfg.data.synthetic.sft_examples)  # the few labelled examples of the warm-up
        idx, _ = step_indices(
            step, cfg.sft.batch_size, n, cfg.train.seed + 1, info.rank, info.world_size, cfg.data.shuffle
        )
        samples = [ds[i] for i in idx]
        return self.sft_update(samples, [sft_target(s, cfg.data.synthetic.prompt_style) for s in samples])

    def sft_update(self, samples: list, texts: list[str]) -> dict[str, float]:
        """One SFT optimizer step on this rank's ``samples`` answered by ``texts`` (the warm-up's and a
        rejection round's): the loss over every rank's answer tokens, then the update."""
        cfg, info = self.cfg, self.info
        self._batch_ids = [s.id for s in samples]
        pb = encode_prompts(self.policy, self.processor, samples, cfg.rollout.max_prompt_length, info.device)
        ids, mask = encode_targets(self.processor.tokenizer, texts, info.device)
        with self._collective("the SFT token count"):
            total_tokens = distributed.all_reduce_sum(mask.sum().float())
        layout = GroupLayout(pb.size, 1)  # one target per prompt
        zeros = torch.zeros(pb.size, device=info.device)
        (mb,) = micro_batches(layout, pb, ids, mask, mask.float(), zeros, pb.size)
        out = sft_loss(policy_logprobs(self.policy, mb), mask, total_tokens=total_tokens)
        (out.loss * distributed.loss_scale(info)).backward()
        m = StepMetrics()
        m.add_sum("loss", float(out.loss.detach()))
        m.add_sum("tokens", out.metrics["tokens"])
        m.add_mean("nll", out.metrics["nll"], out.metrics["tokens"])
        with self._collective("the reduction of step metrics"):
            metrics = m.reduce(info)
        return {**metrics, **self._optimizer_step(metrics["loss"])}

    # ---- one GRPO step ---------------------------------------------------------------------------
    def grpo_step(self, step: int, grpo_step: int) -> tuple[dict[str, float], list[dict]]:
        cfg, info = self.cfg, self.info
        G, mu = cfg.rollout.group_size, cfg.grpo.num_iterations
        peaks = memory.PhasePeaks(info.device)
        self._phase("generation")
        idx, positions = step_indices(
            grpo_step,
            cfg.train.prompts_per_step,
            len(self.data.train),
            cfg.train.seed,
            info.rank,
            info.world_size,
            cfg.data.shuffle,
        )
        samples = [self.data.train[i] for i in idx]
        self._batch_ids = [s.id for s in samples]
        sampling = SamplingParams(
            cfg.rollout.max_completion_length, cfg.rollout.temperature, cfg.rollout.top_p, cfg.rollout.top_k
        )
        with peaks.phase("rollout"):
            pb = encode_prompts(
                self.policy, self.processor, samples, cfg.rollout.max_prompt_length, info.device
            )
            layout = GroupLayout(pb.size, G)
            self.policy.eval()
            feats = step_features(self.policy, pb)  # the vision tower once for the whole step
            ro = self.engine.generate(  # rollout.engine: hf (our decode loop) or vllm (mmrft.engines)
                self.policy,
                self.processor,
                samples,
                pb,
                G,
                sampling,
                [sample_seed(cfg.train.seed, p) for p in positions],
                feats=feats,
                all_done=self._all_done,
            )
            self.policy.train()
        seq_samples = [samples[b] for b in ro.seq_to_prompt.tolist()]
        self._phase("reward")
        scored = own = self.rewards(ro.texts, seq_samples)  # own: the policy's completions' scores
        guided = None
        if cfg.grpo.guidance == "reference":  # demonstration-guided GRPO (mmrft.guidance); off by default
            guided = guidance.apply_reference(
                ro, scored, samples, self.rewards, self.processor.tokenizer,
                cfg.data.synthetic.prompt_style, cfg.grpo.guidance_threshold,
            )  # fmt: skip
            ro, scored = guided.rollout, guided.scored
        self._phase("update")

        # advantages over the GLOBAL batch (identical to one process holding every prompt)
        N = layout.sequences
        with self._collective("the all-gather of rewards"):
            rewards_all = distributed.all_gather_tensor(scored.total.to(info.device)).cpu()  # [W*N]
        advantages = group_advantages(rewards_all, G, cfg.grpo.scale_rewards)[
            info.rank * N : (info.rank + 1) * N
        ]
        mask = ro.completion_mask.float()  # [N, T]
        keep = torch.ones(N, dtype=torch.bool)
        zero_std = zero_variance_groups(scored.total, G)  # [B]
        if cfg.grpo.drop_zero_variance_groups:
            keep = ~layout.per_sequence(zero_std)
            mask = mask * keep.to(mask.device)[:, None]
        # clamped: when dynamic sampling drops every group the loss is 0, not 0/0
        with self._collective("the token and sequence counts"):
            total_tokens = distributed.all_reduce_sum(mask.sum()).clamp(min=1.0)
            total_seqs = distributed.all_reduce_sum(keep.sum().float().to(info.device)).clamp(min=1.0)
        advantages = advantages.to(info.device)
        temperature = cfg.rollout.temperature if cfg.rollout.temperature > 0 else 1.0
        mbs = micro_batches(
            layout, pb, ro.completion_ids, ro.completion_mask, mask, advantages,
            cfg.train.micro_batch_size // G, feats, temperature,
        )  # fmt: skip

        with peaks.phase("reference"), torch.no_grad():
            ref_lp: list[torch.Tensor] | None = None
            if cfg.grpo.beta > 0:
                ref_feats = reference_features(self.policy, self.reference, pb, feats)
                ref_lp = [reference_logprobs(self.policy, self.reference, mb, ref_feats) for mb in mbs]
            old_lp = [policy_logprobs(self.policy, mb) for mb in mbs] if mu > 1 else None
        # the engine's log-probs of its sampled tokens (vLLM; our own loop reports them too)
        engine_lp = [ro.logprobs[mb.seqs] for mb in mbs] if ro.logprobs is not None else None
        mismatch = MismatchMeter(cfg.grpo.tis_cap)  # rollout/logprob_diff_*: the engine's vs our log-probs
        with peaks.phase("update"):
            passes = [
                self._update(
                    mbs,
                    ref_lp,
                    old_lp,
                    total_tokens,
                    total_seqs,
                    engine_lp,
                    mismatch if i == 0 else None,
                    guided,
                )
                for i in range(mu)
            ]

        m = StepMetrics()
        m.add_rewards(own)  # reward/<name>: the policy's own completions, reference answers left out
        m.add_mean("completion_len", float(ro.completion_mask.sum(1).float().mean()), N)
        m.add_mean("truncated_frac", float(ro.truncated.float().mean()), N)
        m.add_mean("zero_std_frac", float(zero_std.float().mean()), layout.prompts)
        for name, v in peaks.metrics().items():
            m.add_max(name, v)
        m.add_global("reward", float(rewards_all.nanmean()))
        m.add_global("reward_std", float(layout.groups(rewards_all).std(dim=1).nanmean()))
        if guided is not None:  # share of the step's groups (all ranks) that got the reference answer
            m.add_mean("guidance_frac", guided.fired / max(guided.groups, 1), guided.groups)
        with self._collective("the reduction of step metrics"):
            metrics = {**per_pass(passes), **m.reduce(info)}
        with self._collective("the gather of the rollout mismatch"):
            metrics.update(mismatch.reduce(lambda t: distributed.all_gather_tensor(t.to(info.device)).cpu()))
        metrics.update(self.engine.after_step(self.policy, grpo_step))  # weight sync on rollout.sync_every
        rows = (
            self._sample_rows(ro, layout, samples, scored, advantages)
            if step % max(1, cfg.train.sample_every) == 0
            else []
        )
        return metrics, rows

    def _update(
        self,
        mbs: list[MicroBatch],
        ref_lp,
        old_lp,
        total_tokens,
        total_seqs,
        engine_lp=None,
        mismatch=None,
        guided=None,
    ) -> dict[str, float]:
        """One of the mu passes: every micro-batch's loss backward, then one optimizer step.

        engine_lp: per micro-batch, the rollout engine's log-probs [n, T] of its sampled tokens (None
        when it gave none): with ``grpo.tis_cap`` they weight each token's surrogate term, and
        ``mismatch`` (the first pass only) measures them against the trainer's. guided: the step's
        ``mmrft.guidance.Guided`` (None: guidance off); its reference answers are trained off-policy."""
        cfg = self.cfg
        m = StepMetrics()
        for k, mb in enumerate(mbs):
            lp = policy_logprobs(self.policy, mb)
            old, weights = old_lp[k] if old_lp is not None else lp.detach(), None
            sampled = None if guided is None else ~guided.off_policy[mb.seqs, None]  # not a reference answer
            on_policy = mb.loss_mask if sampled is None else mb.loss_mask * sampled
            if engine_lp is not None:
                if mismatch is not None:
                    seen = mb.completion_mask if sampled is None else mb.completion_mask * sampled
                    mismatch.add(old, engine_lp[k], seen)
                if cfg.grpo.tis_cap is not None:
                    weights = tis_weights(old, engine_lp[k], on_policy, cfg.grpo.tis_cap)
            out = policy_loss(
                lp, old, mb.advantages, on_policy,
                epsilon_low=cfg.grpo.epsilon_low, epsilon_high=cfg.grpo.epsilon_high,
                ref_logprobs=ref_lp[k] if ref_lp is not None else None, beta=cfg.grpo.beta,
                aggregation=cfg.grpo.loss_aggregation, max_completion_length=cfg.rollout.max_completion_length,
                importance_level=cfg.grpo.importance_level, total_tokens=total_tokens, total_seqs=total_seqs,
                token_weights=weights,
            )  # fmt: skip
            if guided is not None:  # the reference answers' tokens: LUFFY's off-policy term
                out = self._guided_loss(
                    out, guided, lp, mb.advantages, mb.loss_mask, mb.seqs,
                    ref_lp[k] if ref_lp is not None else None, total_tokens, total_seqs,
                )  # fmt: skip
            (out.loss * distributed.loss_scale(self.info)).backward()
            m.add_sum("loss", float(out.loss.detach()))  # each rank holds its share of the global loss
            m.add_loss_metrics(out.metrics, mb.tokens, len(mb.seqs))
        with self._collective("the reduction of step metrics"):
            metrics = m.reduce(self.info)
        metrics.update(self._optimizer_step(metrics["loss"]))
        return metrics

    def _guided_loss(self, out, guided, lp, advantages, mask, seqs, ref_lp, total_tokens, total_seqs):
        """``out`` (the on-policy loss of a micro-batch) plus the off-policy loss of its reference answers,
        with the step's global normalisers (mmrft.guidance)."""
        cfg = self.cfg
        off = guidance.offpolicy_loss(
            lp, advantages, mask * guided.off_policy[seqs, None], gamma=cfg.grpo.guidance_gamma,
            aggregation=cfg.grpo.loss_aggregation, ref_logprobs=ref_lp, beta=cfg.grpo.beta,
            max_completion_length=cfg.rollout.max_completion_length, total_tokens=total_tokens,
            total_seqs=total_seqs,
        )  # fmt: skip
        return out._replace(loss=out.loss + off.loss, metrics={**out.metrics, **off.metrics})

    def _sample_rows(self, ro: Rollout, layout: GroupLayout, samples, scored, advantages) -> list[dict]:
        rows = []
        for b in range(min(2, len(samples))):
            prompt_text = (
                " ".join(
                    c.get("text", f"<{c.get('type')}>")
                    for m in samples[b].prompt
                    for c in m["content"]
                    if isinstance(c, dict)
                )
                if isinstance(samples[b].prompt[0].get("content"), list)
                else str(samples[b].prompt)
            )
            for g in range(layout.group_size):
                n = layout.seq(b, g)
                rows.append({
                    "id": samples[b].id, "prompt": prompt_text, "completion": ro.texts[n],
                    "solution": samples[b].solution, "reward": float(scored.total[n]),
                    "rewards": {k: float(scored.per_reward[i, n]) for i, k in enumerate(scored.names)},
                    "advantage": float(advantages[n]),
                })  # fmt: skip
        return rows

    # ---- the loop ---------------------------------------------------------------------------------
    def evaluate(self, tag: str | None = None) -> dict[str, float | None]:
        """Held-out metrics of the first ``eval.max_samples`` records (mmrft.evaluation, the code of
        `mmrft eval`); rank 0 also writes eval.json, predictions.jsonl and eval.md to
        ``eval/before``, ``eval/step_<N>`` or ``eval/after`` in the run directory (or ``eval/<tag>``)."""
        if self.data.eval is None:
            return {}
        cfg = self.cfg
        report = evaluate(
            self.policy, self.processor, self.data.eval, self.rewards, cfg, self.info,
            limit=cfg.eval.max_samples, progress=cfg.train.progress_bar,
        )  # fmt: skip
        if tag is None and "eval_before" not in self.state:
            tag = "before"
        elif tag is None and self.state["step"] >= self.total_steps:
            tag = "after"
        elif tag is None:
            tag = f"step_{self.state['step'] - cfg.sft.steps}"
        if self.info.is_main:
            report.write(self.run_dir / "eval" / tag)
        return report.metrics

    def save(self, step: int) -> None:
        """Checkpoint global ``step`` (collective), with the log position and the eval metric retention
        ranks by (when an evaluation ran at this step)."""
        cfg = self.cfg
        self.state["step"] = step
        state = {**self.state, "logs": list(self.tracker.position())}
        best = cfg.train.keep_best_metric
        value = self.tracker.value_at(best, step) if best else None
        sharded = cfg.train.checkpoint_format == "sharded" or (
            cfg.train.checkpoint_format == "auto" and self.info.strategy == "fsdp"
        )
        config = to_dict(cfg)
        checkpoint.save(
            self.run_dir, step, self.policy, self.optimizer, self.scheduler, state, self.info,
            config=config, config_hash=checkpoint.config_hash(config), sharded=sharded,
            retention=checkpoint.Retention(cfg.train.keep_last, best, cfg.train.keep_best_mode),
            metric={best: value} if value is not None else None,
        )  # fmt: skip

    def run(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train to the end (or stop after global step ``stop_after``, as a crash would); return the summary.

        A watchdog bounds each phase meanwhile (``watchdog.*``; stacks go to ``<output_dir>/stacks``)."""
        self.watchdog = Watchdog(self.run_dir / "stacks", self.info.rank, self.cfg.watchdog.grace_s)
        try:
            with self.watchdog:
                return self._loop(stop_after)
        except BaseException:
            self.tracker.close()  # flush the logs and end the progress bar's line before the error
            raise
        finally:
            self.watchdog = None

    def _loop(self, stop_after: int | None) -> dict[str, Any]:
        cfg = self.cfg
        save_every = cfg.train.save_every
        for step in range(self.state["step"], self.total_steps):
            stage = self.stage_of(step)
            if stage == "grpo":
                rejection.run_stage(self)  # the rejection-sampling rounds not yet done (none by default)
            if stage != self.state["optimizer_stage"]:
                self.optimizer, self.scheduler = make_optimizer(self.policy, cfg, stage)
                self.state["optimizer_stage"] = stage
            if stage == "grpo" and "eval_before" not in self.state:
                self._phase("eval", "the evaluation before GRPO")
                self.state["eval_before"] = self.evaluate()
                self._phase(None)
                self.tracker.log(step - cfg.sft.steps, "grpo", eval_metrics(self.state["eval_before"]))
            t = time.time()
            log_step = step if stage == "sft" else step - cfg.sft.steps
            self._where = f"{stage} step {log_step}"
            if stage == "sft":
                metrics, rows = self.sft_step(step), []
            else:
                metrics, rows = self.grpo_step(step, log_step)
            self._phase(None)
            metrics["step_time"] = time.time() - t
            if (step + 1) % max(1, cfg.train.log_every) == 0 or step + 1 == self.total_steps:
                self.tracker.log(log_step, stage, metrics)
            self.tracker.samples(log_step, rows)
            self.tracker.advance()
            self.state["step"] = step + 1
            self._stop_if_diverged(step, stage)
            if (
                stage == "grpo"
                and cfg.train.eval_every
                and (log_step + 1) % cfg.train.eval_every == 0
                and step + 1 < self.total_steps
            ):
                self._phase("eval", f"the evaluation after grpo step {log_step}")
                ev = self.evaluate()
                self._phase(None)
                self.tracker.log(log_step + 1, "grpo", eval_metrics(ev))
            if save_every and (step + 1) % save_every == 0 and step + 1 < self.total_steps:
                self.save(step + 1)
            if stop_after is not None and step + 1 >= stop_after:
                return {"stopped_at": step + 1}
        return self.finish()

    def finish(self) -> dict[str, Any]:
        cfg = self.cfg
        rejection.run_stage(self)  # a run without GRPO steps: the rounds come after SFT here
        self._phase("eval", "the final evaluation")
        if "eval_before" not in self.state:
            self.state["eval_before"] = self.evaluate()
        if "eval_after" not in self.state:  # a run resumed from its final checkpoint has it already
            eval_after = self.evaluate()
            self._phase(None)
            self.tracker.log(cfg.grpo.steps, "grpo", eval_metrics(eval_after))
            self.state["eval_after"] = eval_after
            self.save(self.total_steps)
        self._phase(None)
        eval_after = self.state["eval_after"]
        self._export()
        summary = {
            "eval_before": self.state["eval_before"],
            "eval_after": eval_after,
            "wall_seconds": time.time() - self.t0,
            "steps": {"sft": cfg.sft.steps, "grpo": cfg.grpo.steps},
            "world_size": self.info.world_size,
            "rollout_engine": self.engine.name,
        }
        skipped = {
            name: dict(ds.skipped) for name, ds in vars(self.data).items() if ds is not None and ds.skipped
        }
        if skipped:  # data.on_bad_record=skip: what was left out, by reason (this rank's view)
            summary["skipped_records"] = skipped
        if cfg.train.keep_best_metric:  # the checkpoint retention kept as the best
            summary["best_checkpoint"] = checkpoint.best_checkpoint(self.run_dir, cfg.train.keep_best_metric)
        if self.info.is_main:
            for name in skipped:
                print(f"{name} data: {getattr(self.data, name).skipped_summary()}")
            checkpoint.write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2))
            if cfg.train.plot:
                plot_rewards(self.run_dir, self.run_dir / "reward_curve.png")
        self.tracker.close()
        return summary

    def _export(self) -> None:
        """The final weights as a Hugging Face checkpoint in ``final/`` (loadable like the input)."""
        sd, _ = distributed.full_state_dict(self.policy)
        if self.info.is_main:
            final = self.run_dir / "final"
            tmp = checkpoint.tmp_dir_for(final)  # written aside, then swapped in: never half a folder
            hf = self.policy.hf
            if hasattr(hf, "get_base_model"):
                hf.save_pretrained(tmp)  # the LoRA adapter
            else:
                hf.save_pretrained(tmp, state_dict={k.removeprefix("hf."): v for k, v in sd.items()})
            self.processor.save_pretrained(tmp)
            checkpoint.replace_dir(tmp, final)
        distributed.barrier()


def eval_metrics(ev: dict[str, float | None]) -> dict[str, float]:
    """``eval_reward`` and ``eval/<metric>`` (``eval/classification/accuracy``, ...); undefined ones left out."""
    return {f"eval_{k}" if k == "reward" else f"eval/{k}": v for k, v in ev.items() if v is not None}


def train(
    cfg: Config, resume: bool = False, stop_after: int | None = None, resume_force: bool = False
) -> dict[str, Any]:
    """Run a whole training from a Config; returns the summary (also written to summary.json)."""
    trainer = Trainer(cfg, resume=resume, resume_force=resume_force)
    return trainer.run(stop_after=stop_after)
