"""Held-out evaluation: one greedy completion per record, scored by the training rewards.

Records are split over ranks (rank r takes every W-th); shards are padded to equal batch counts so that
every rank runs the same collectives, and the padding is not counted.
"""

from __future__ import annotations

import math

import torch

from mmrft import distributed
from mmrft.data import sample_seed
from mmrft.models.forward import VLMOps
from mmrft.rollout import SamplingParams, encode_prompts, generate
from mmrft.scoring import RewardStack


@torch.no_grad()
def evaluate(
    model, processor, dataset, stack: RewardStack, cfg, info: distributed.DistInfo
) -> dict[str, float]:
    """Mean total reward and per-reward means over the first ``eval.max_samples`` records."""
    n = min(len(dataset), cfg.eval.max_samples)
    mine = list(range(info.rank, n, info.world_size))
    bs = cfg.eval.batch_size
    n_batches = math.ceil(math.ceil(n / info.world_size) / bs)
    params = SamplingParams(cfg.rollout.max_completion_length, cfg.eval.temperature, 1.0, 0)
    was_training = model.training
    model.eval()
    names = stack.names
    sums = torch.zeros(len(names) + 1, dtype=torch.float64)
    counts = torch.zeros(len(names) + 1, dtype=torch.float64)
    for b in range(n_batches):
        idx = mine[b * bs : (b + 1) * bs]
        real = len(idx)
        if real == 0:
            idx = [0]  # keep step with the other ranks; not counted
        samples = [dataset[i] for i in idx]
        pb = encode_prompts(model, processor, samples, cfg.rollout.max_prompt_length, info.device)
        ro = generate(
            model,
            processor,
            pb,
            1,
            params,
            [sample_seed(cfg.train.seed, -1 - i) for i in idx],
            all_done=lambda f: distributed.all_true(f, info),
        )
        scored = stack(ro.texts, samples)
        vals = torch.cat([scored.total[None], scored.per_reward]).double()[:, :real]  # [K+1, real]
        ok = ~vals.isnan()
        sums += torch.where(ok, vals, torch.zeros_like(vals)).sum(1)
        counts += ok.sum(1)
    if was_training:
        model.train()
    sums = distributed.all_reduce_sum(sums.to(info.device)).cpu()
    counts = distributed.all_reduce_sum(counts.to(info.device)).cpu()
    means = (sums / counts.clamp(min=1)).tolist()
    out = {"reward": means[0], "n": float(n)}
    out.update({f"reward/{k}": v for k, v in zip(names, means[1:])})
    return out


def evaluate_checkpoint(cfg) -> dict[str, float]:
    """Load ``model.path`` and score greedy answers on ``data.eval_file`` with the config's rewards."""
    from data_pipelines.dataset import JsonlDataset
    from mmrft.data import vision_spec
    from mmrft.models.loading import load_model

    if not cfg.data.eval_file:
        raise ValueError("data.eval_file: give the JSONL to evaluate on")
    if not cfg.model.path:
        raise ValueError("model.path: give the checkpoint directory to evaluate")
    info = distributed.init(cfg.distributed.strategy, cfg.distributed.backend, cfg.train.device)
    loaded = load_model(
        cfg.model.path,
        device=info.device,
        dtype=cfg.model.dtype,
        compute_dtype=cfg.model.compute_dtype,
        attn_implementation=cfg.model.attn_implementation,
        min_pixels=cfg.data.min_pixels,
        max_pixels=cfg.data.max_pixels,
    )
    dataset = JsonlDataset(cfg.data.eval_file, vision=vision_spec(cfg), on_bad_record=cfg.data.on_bad_record)
    model = VLMOps(loaded.policy, loaded.compute_dtype)
    result = evaluate(model, loaded.processor, dataset, RewardStack(cfg.rewards, info.device), cfg, info)
    if dataset.skipped:
        result["skipped"] = float(sum(dataset.skipped.values()))
    return result
