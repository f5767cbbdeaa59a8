"""Rollouts: G sampled completions per prompt, the vision tower and the prompt prefill run once.

``encode_prompts`` turns Samples into a left-padded ``PromptBatch`` (never truncating: a prompt over
``max_prompt_length`` is an error naming the record). ``generate`` prefills the B prompts once, copies the
KV cache G times and samples token by token, stopping each sequence at ``<|im_end|>``; vision special
tokens are never sampled. The KV cache and attention mask are preallocated and written in place, and
finished sequences leave the decode batch (``mmrft.models.cache.DecodeCache``). Sampling randomness is a
per-prompt counter-based hash computed on the device (``mmrft.sampling``), so the completions of a
prompt do not depend on which other prompts share its batch, its rank, or the world size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from data_pipelines.sample import Sample
from mmrft.config import ConfigError
from mmrft.models.cache import DecodeCache
from mmrft.models.forward import (
    PromptBatch,
    VisionFeatures,
    as_ops,
    embed_with_vision,
    encode_vision,
    hf_core,
    rope_positions,
)
from mmrft.sampling import SamplingParams, draw, filter_logits, sequence_keys, uniforms

__all__ = ["FORBIDDEN_TOKENS", "Rollout", "SamplingParams", "encode_prompts", "generate"]

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
class Rollout:
    """N = B*G completions, group-contiguous (the G completions of prompt 0 first).

    completion_ids / completion_mask: [N, T], right-padded; the mask covers tokens up to and including
    the stop token. texts: decoded completions without special tokens. seq_to_prompt: [N].
    truncated: [N] True where the completion hit max_new_tokens without a stop token.
    logprobs: [N, T] log-probs of the sampled tokens under the sampling model at the rollout
    temperature, before top-k / top-p (what the training forward recomputes); 0 on padding. None when
    the engine does not report them.
    """

    prompts: PromptBatch
    completion_ids: Tensor
    completion_mask: Tensor
    seq_to_prompt: Tensor
    texts: list[str]
    truncated: Tensor
    group_size: int
    logprobs: Tensor | None = None


def _repeat(x: Tensor, G: int) -> Tensor:
    """[B, ...] -> [B*G, ...], each row G times in a row (``repeat_interleave`` as one expand + copy;
    always a new tensor, never a stride-0 view)."""
    return x[:, None].expand(x.shape[0], G, *x.shape[1:]).contiguous().view(x.shape[0] * G, *x.shape[1:])


def _scatter_rows(full: tuple[Tensor, ...], rows: Tensor, parts: tuple[Tensor, ...]) -> None:
    """Write the decode batch's rows (``rows``: their original indices) back into the [N, ...] results."""
    for f, part in zip(full, parts):
        f[rows] = part


def _step_mask_builder(text_config, prompt_mask: Tensor) -> Callable[[Tensor, int], Tensor | dict]:
    """How a decode step passes its attention mask (attn [n, P + T_max] -> the first L columns).

    With sdpa and full attention in every layer the mask goes in already prepared, as the decoder's
    per-layer-type dict, so the decoder skips building it every step: None when no prompt is padded
    (one query token may see every cached position), else a boolean [n, 1, 1, L] view. Otherwise (eager,
    flash-attention, sliding-window layers) the 2D mask, which the decoder prepares itself.
    """
    types = set(getattr(text_config, "layer_types", None) or ["full_attention"])
    if text_config._attn_implementation != "sdpa" or types != {"full_attention"}:
        return lambda attn, L: attn[:, :L]
    if bool(prompt_mask.all()):
        return lambda attn, L: {"full_attention": None}
    return lambda attn, L: {"full_attention": attn[:, None, None, :L].bool()}


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
    compact: bool = True,
) -> Rollout:
    """Sample ``group_size`` completions for each prompt.

    seeds: one int per prompt; the randomness of completion g of prompt b is a hash of (seeds[b], g,
    token index), so results are independent of batch composition. Returns a group-contiguous Rollout.
    feats: the prompts' vision features when already computed (else the vision tower runs here, once).
    all_done: turns "every local sequence stopped" into "every rank's did" (FSDP2 needs all ranks to
    run the same number of decode steps, since each forward is a collective).
    compact: drop finished sequences from the decode batch (when a quarter of it has finished); the
    completions are the same either way. A rank whose sequences all stopped keeps one row and runs on.
    """
    inner = hf_core(model)
    ops = as_ops(model)
    tok = processor.tokenizer
    device = prompts.input_ids.device
    B, G, T_max = prompts.size, group_size, params.max_new_tokens
    N, P = B * G, prompts.input_ids.shape[1]
    stop_ids = {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    stop = torch.tensor(sorted(i for i in stop_ids if i is not None), device=device)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else int(stop[0])
    vocab = inner.lm_head.out_features
    forbidden = [tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS]
    forbidden = torch.tensor([i for i in forbidden if i is not None and 0 <= i < vocab], device=device)
    lp_temperature = params.temperature if params.temperature > 0 else 1.0

    if feats is None:
        feats = encode_vision(model, prompts)
    prompt_index = torch.arange(B, device=device)
    embeds = embed_with_vision(model, prompts.input_ids, feats, prompt_index)  # [B, P, H]
    cache = DecodeCache(len(inner.model.language_model.layers), P + T_max)
    out = ops("lm", inputs_embeds=embeds, attention_mask=prompts.attention_mask,
              position_ids=prompts.position_ids, cache=cache, use_cache=True)  # fmt: skip
    cache.repeat_rows(G)
    last = _repeat(ops("head", out.last_hidden_state[:, -1]).float(), G)  # [N, V]

    # decode-batch state, one row per sequence still in the batch (``rows``: their original index)
    rows = torch.arange(N, device=device)
    keys = sequence_keys(seeds, G, device)  # [n] sampling keys
    next_pos = _repeat(prompts.next_position, G)  # [n] position of completion token 0
    # attention mask of every position a sequence can reach: its prompt's, then ones (a finished
    # sequence's later positions are never read: its outputs are discarded)
    attn = torch.ones((N, P + T_max), dtype=prompts.attention_mask.dtype, device=device)
    attn.view(B, G, -1)[:, :, :P] = prompts.attention_mask[:, None]
    step_mask = _step_mask_builder(inner.model.language_model.config, prompts.attention_mask)
    tokens = torch.full((N, T_max), pad_id, dtype=torch.long, device=device)
    logprobs = torch.zeros((N, T_max), device=device)
    done = torch.zeros(N, dtype=torch.bool, device=device)
    lengths = torch.zeros(N, dtype=torch.long, device=device)
    result = (tokens.clone(), logprobs.clone(), lengths.clone())  # [N, ...] by original index

    for t in range(T_max):
        scaled = last / lp_temperature if lp_temperature != 1.0 else last  # [n, V]
        lse = torch.logsumexp(scaled, -1)  # of the unfiltered distribution (what training recomputes)
        logits = scaled.index_fill_(-1, forbidden, float("-inf")) if forbidden.numel() else scaled
        if params.temperature <= 0:
            nxt = logits.argmax(-1)
        else:
            nxt = draw(filter_logits(logits, params.top_k, params.top_p), uniforms(keys, t))
        active = ~done
        nxt = torch.where(active, nxt, torch.full_like(nxt, pad_id))
        lp = last.gather(-1, nxt[:, None]).squeeze(-1)
        lp = (lp / lp_temperature if lp_temperature != 1.0 else lp) - lse
        tokens[:, t] = nxt
        logprobs[:, t] = torch.where(active, lp, torch.zeros_like(lp))
        lengths += active.long()
        done = done | (active & torch.isin(nxt, stop))
        finished = bool(done.all()) or t == T_max - 1  # no forward whose output is unused
        if all_done(finished) if all_done is not None else finished:
            break
        if compact:
            running = (~done).nonzero().squeeze(-1)
            if running.numel() <= 0.75 * rows.numel():
                if running.numel() == 0:  # every local sequence stopped, another rank's did not
                    running = running.new_zeros(1)
                _scatter_rows(result, rows, (tokens, logprobs, lengths))
                cache.keep_rows(running)
                rows, keys, next_pos, attn, nxt = (x[running] for x in (rows, keys, next_pos, attn, nxt))
                tokens, logprobs, lengths, done = (x[running] for x in (tokens, logprobs, lengths, done))
        n = rows.numel()
        pos = (next_pos + t).view(1, n, 1).expand(3, n, 1)
        out = ops("lm", inputs_embeds=ops("embed", nxt[:, None]), attention_mask=step_mask(attn, P + t + 1),
                  position_ids=pos, cache=cache, use_cache=True)  # fmt: skip
        last = ops("head", out.last_hidden_state[:, -1]).float()
    _scatter_rows(result, rows, (tokens, logprobs, lengths))
    tokens, logprobs, lengths = result

    T = max(int(lengths.max()) if N else 0, 1)
    completion_ids = tokens[:, :T]
    steps = torch.arange(T, device=device)
    completion_mask = (steps[None] < lengths[:, None]).long()
    ended = torch.isin(completion_ids, stop) & completion_mask.bool()
    truncated = ~ended.any(-1)
    texts = tok.batch_decode(
        [ids[: int(n)].tolist() for ids, n in zip(completion_ids, lengths)], skip_special_tokens=True
    )
    return Rollout(prompts, completion_ids, completion_mask, _repeat(prompt_index, G), texts,
                   truncated, G, logprobs[:, :T])  # fmt: skip
