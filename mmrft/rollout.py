"""Rollouts: G sampled completions per prompt, the vision tower and the prompt prefill run once.

``encode_prompts`` turns Samples into a left-padded ``PromptBatch`` (never truncating: a prompt over
``max_prompt_length`` is an error naming the record). ``generate`` prefills the B prompts once, copies the
KV cache G times and samples token by token, stopping each sequence at ``<|im_end|>``; vision special
tokens are never sampled. Sampling noise is seeded per prompt (``seeds[b]``), so the completions of a
prompt do not depend on which other prompts share its batch, its rank, or the world size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from data_pipelines.sample import Sample
from mmrft.config import ConfigError
from mmrft.models.forward import (
    PromptBatch,
    VisionFeatures,
    _inner,
    as_ops,
    embed_with_vision,
    encode_vision,
    rope_positions,
)

# Special tokens a policy must never emit: they would ask for vision features that do not exist.
FORBIDDEN_TOKENS = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|im_start|>",
)


@dataclass
class SamplingParams:
    """How completions are drawn. temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


@dataclass
class Rollout:
    """N = B*G completions, group-contiguous (the G completions of prompt 0 first).

    completion_ids / completion_mask: [N, T], right-padded; the mask covers tokens up to and including
    the stop token. texts: decoded completions without special tokens. seq_to_prompt: [N].
    truncated: [N] True where the completion hit max_new_tokens without a stop token.
    """

    prompts: PromptBatch
    completion_ids: Tensor
    completion_mask: Tensor
    seq_to_prompt: Tensor
    texts: list[str]
    truncated: Tensor
    group_size: int


def _video_inputs(samples: list[Sample]) -> tuple[list, list[dict]]:
    """Frames already sampled and resized by data_pipelines, with the ``video_metadata`` that tells the
    processor their true timing (without it transformers assumes 24 fps and the time axis is wrong)."""
    clips = [s.video for s in samples if s.video is not None]
    return [c.frames for c in clips], [c.metadata for c in clips]


def encode_prompts(
    model, processor, samples: list[Sample], max_prompt_length: int, device: torch.device
) -> PromptBatch:
    """Chat template + processor for B samples, left-padded; vision placeholders expanded.

    Raises ValueError naming the record when its prompt (vision tokens included) exceeds
    ``max_prompt_length``: vision tokens are never truncated.
    """
    texts = [
        processor.apply_chat_template(s.prompt, add_generation_prompt=True, tokenize=False) for s in samples
    ]
    images = [im for s in samples for im in s.images]
    videos, metadata = _video_inputs(samples)
    kwargs: dict = {}
    if videos:
        kwargs["videos"] = videos
        kwargs["video_metadata"] = metadata
        kwargs["do_sample_frames"] = False
    enc = processor(
        text=texts,
        images=images or None,
        padding=True,
        padding_side="left",
        return_tensors="pt",
        **kwargs,
    )
    lengths = enc["attention_mask"].sum(-1).tolist()
    for s, n in zip(samples, lengths):
        if n > max_prompt_length:
            raise ConfigError(
                f"record {s.id!r}: prompt is {n} tokens with its vision tokens, over "
                f"rollout.max_prompt_length={max_prompt_length}; raise it or lower data.max_pixels "
                "(prompts are never truncated inside vision tokens)"
            )
    enc = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in enc.items()}
    spg = enc.get("second_per_grid_ts")
    if spg is not None and not isinstance(spg, Tensor):
        spg = torch.tensor(spg, dtype=torch.float32, device=device)
    mm = enc.get("mm_token_type_ids")
    if mm is None:
        mm = torch.zeros_like(enc["input_ids"])
    pos, nxt = rope_positions(
        model,
        enc["input_ids"],
        mm,
        enc["attention_mask"],
        enc.get("image_grid_thw"),
        enc.get("video_grid_thw"),
        spg,
    )
    return PromptBatch(
        input_ids=enc["input_ids"],
        attention_mask=enc["attention_mask"],
        mm_token_type_ids=mm,
        position_ids=pos,
        next_position=nxt,
        pixel_values=enc.get("pixel_values"),
        image_grid_thw=enc.get("image_grid_thw"),
        pixel_values_videos=enc.get("pixel_values_videos"),
        video_grid_thw=enc.get("video_grid_thw"),
        second_per_grid_ts=spg,
        images_per_prompt=[len(s.images) for s in samples],
        videos_per_prompt=[1 if s.video is not None else 0 for s in samples],
        ids=[s.id for s in samples],
    )


def _filter_logits(logits: Tensor, params: SamplingParams) -> Tensor:
    """Temperature, top-k and top-p on logits [N, V] (filtered entries become -inf)."""
    logits = logits / params.temperature
    if params.top_k and params.top_k < logits.shape[-1]:
        kth = torch.topk(logits, params.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        drop_sorted = cum - probs > params.top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


@torch.no_grad()
def generate(
    model,
    processor,
    prompts: PromptBatch,
    group_size: int,
    params: SamplingParams,
    seeds: list[int],
    feats: VisionFeatures | None = None,
    all_done: Callable[[bool], bool] | None = None,
) -> Rollout:
    """Sample ``group_size`` completions for each prompt.

    seeds: one int per prompt; completion g of prompt b uses noise from a generator seeded with
    seeds[b], so results are independent of batch composition. Returns a group-contiguous Rollout.
    all_done: turns "every local sequence stopped" into "every rank's did" (FSDP2 needs all ranks to
    run the same number of decode steps, since each forward is a collective).
    """
    inner = _inner(model)
    ops = as_ops(model)
    tok = processor.tokenizer
    device = prompts.input_ids.device
    B, G = prompts.size, group_size
    N = B * G
    stop_ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    stop = torch.tensor(sorted(i for i in stop_ids if i is not None), device=device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(stop[0])
    vocab = inner.lm_head.out_features
    forbidden = [tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS]
    forbidden = torch.tensor([i for i in forbidden if i is not None and 0 <= i < vocab], device=device)

    if feats is None:
        feats = encode_vision(model, prompts)
    prompt_index = torch.arange(B, device=device)
    embeds = embed_with_vision(model, prompts.input_ids, feats, prompt_index)  # [B, P, H]
    out = ops(
        "lm",
        inputs_embeds=embeds,
        attention_mask=prompts.attention_mask,
        position_ids=prompts.position_ids,
        use_cache=True,
    )
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(G)
    last = ops("head", out.last_hidden_state[:, -1]).float().repeat_interleave(G, dim=0)  # [N, V]

    gens = [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]
    seq_to_prompt = prompt_index.repeat_interleave(G)
    attn = prompts.attention_mask.repeat_interleave(G, dim=0)
    next_pos = prompts.next_position.repeat_interleave(G)
    tokens = torch.full((N, params.max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    for t in range(params.max_new_tokens):
        logits = last
        if forbidden.numel():
            logits = logits.index_fill(-1, forbidden, float("-inf"))
        if params.temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            filt = _filter_logits(logits, params)
            # Gumbel-max sampling with per-prompt noise: [G, V] from each prompt's own generator
            u = torch.cat([torch.rand((G, filt.shape[-1]), generator=g) for g in gens]).to(device)
            expo = (-torch.log(u.clamp(min=1e-20))).clamp(min=1e-20)  # Exp(1) noise
            gumbel = -torch.log(expo)
            nxt = (filt + gumbel).argmax(-1)
        active = ~done
        nxt = torch.where(active, nxt, torch.full_like(nxt, pad_id))
        tokens[:, t] = nxt
        lengths += active.long()
        done = done | (active & torch.isin(nxt, stop))
        finished = bool(done.all()) or t == params.max_new_tokens - 1  # no forward whose output is unused
        if all_done(finished) if all_done is not None else finished:
            break
        attn = torch.cat([attn, active.long()[:, None]], dim=1)
        pos = (next_pos + t).view(1, N, 1).expand(3, N, 1)
        step_embeds = ops("embed", nxt[:, None])
        out = ops(
            "lm",
            inputs_embeds=step_embeds,
            attention_mask=attn,
            position_ids=pos,
            cache=cache,
            use_cache=True,
        )
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        last = ops("head", out.last_hidden_state[:, -1]).float()

    T = int(lengths.max()) if N else 0
    T = max(T, 1)
    completion_ids = tokens[:, :T]
    steps = torch.arange(T, device=device)
    completion_mask = (steps[None] < lengths[:, None]).long()
    ended = torch.isin(completion_ids, stop) & completion_mask.bool()
    truncated = ~ended.any(-1)
    texts = tok.batch_decode(
        [ids[: int(n)].tolist() for ids, n in zip(completion_ids, lengths)], skip_special_tokens=True
    )
    return Rollout(prompts, completion_ids, completion_mask, seq_to_prompt, texts, truncated, G)
