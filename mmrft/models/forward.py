"""Forward passes that run the vision tower once per image, shared by every completion of a prompt.

A step sees B prompts and G completions each (N = B*G sequences). The vision tower encodes the B
prompts' images once (``encode_vision``); generation prefills the B prompts once and copies the KV
cache G times; the training forward scatters each prompt's features into its G sequences. M-RoPE
positions are computed once per prompt (``get_rope_index``) and continue 1-D over the completion.

``completion_logprobs`` (the training forward) runs each prompt once and lets its G completions attend
to the prompt's recorded keys/values, with or without gradient checkpointing (``share_prefix``), or the
N full sequences padded, or packed without padding (``packed``); only masked-in completion tokens reach
the LM head, a bounded chunk of tokens at a time (``head_logprobs``). Vision features computed once
without grad can serve every forward when the vision tower is frozen (``vision_frozen``).

Works for Qwen2.5-VL and Qwen2-VL through ``model.model.{visual, language_model, get_rope_index}``
(transformers 5.x) and through a peft wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from mmrft.models.cache import PrefixCapture, SharedPrefixCache, checkpointable_cache


@dataclass
class PromptBatch:
    """B prompts tokenised with LEFT padding, and their vision inputs.

    input_ids, attention_mask, mm_token_type_ids: [B, P]
    position_ids: [3, B, P] M-RoPE positions (0 on padding).
    next_position: [B] the position of the first completion token (max prompt position + 1).
    pixel_values: [n_patches, D] for all images of the batch, in prompt order; image_grid_thw [n_images, 3].
    pixel_values_videos / video_grid_thw / second_per_grid_ts: the same for videos.
    images_per_prompt / videos_per_prompt: how many of each belong to prompt b, in order.
    ids: record ids (for error messages and logs).
    """

    input_ids: Tensor
    attention_mask: Tensor
    mm_token_type_ids: Tensor
    position_ids: Tensor
    next_position: Tensor
    pixel_values: Tensor | None
    image_grid_thw: Tensor | None
    pixel_values_videos: Tensor | None
    video_grid_thw: Tensor | None
    second_per_grid_ts: Tensor | None
    images_per_prompt: list[int]
    videos_per_prompt: list[int]
    ids: list[str]

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def select(self, prompts: list[int]) -> PromptBatch:
        """The sub-batch of the given prompt indices (vision inputs sliced to match)."""
        idx = torch.tensor(prompts, dtype=torch.long, device=self.input_ids.device)
        pv, igrid = _slice_vision(self.pixel_values, self.image_grid_thw, self.images_per_prompt, prompts)
        pvv, vgrid = _slice_vision(
            self.pixel_values_videos, self.video_grid_thw, self.videos_per_prompt, prompts
        )
        spg = None
        if self.second_per_grid_ts is not None:
            starts = _starts(self.videos_per_prompt)
            keep = [i for b in prompts for i in range(starts[b], starts[b] + self.videos_per_prompt[b])]
            spg = self.second_per_grid_ts[keep]
        return PromptBatch(
            input_ids=self.input_ids[idx],
            attention_mask=self.attention_mask[idx],
            mm_token_type_ids=self.mm_token_type_ids[idx],
            position_ids=self.position_ids[:, idx],
            next_position=self.next_position[idx],
            pixel_values=pv,
            image_grid_thw=igrid,
            pixel_values_videos=pvv,
            video_grid_thw=vgrid,
            second_per_grid_ts=spg,
            images_per_prompt=[self.images_per_prompt[b] for b in prompts],
            videos_per_prompt=[self.videos_per_prompt[b] for b in prompts],
            ids=[self.ids[b] for b in prompts],
        )


def _starts(counts: list[int]) -> list[int]:
    out, acc = [], 0
    for c in counts:
        out.append(acc)
        acc += c
    return out


def _slice_vision(pixels, grid, per_prompt, prompts):
    if pixels is None or grid is None:
        return None, None
    patches = grid.prod(-1).tolist()
    item_starts = _starts(per_prompt)
    patch_starts = _starts(patches)
    items = [i for b in prompts for i in range(item_starts[b], item_starts[b] + per_prompt[b])]
    if not items:
        return None, None
    rows = torch.cat([torch.arange(patch_starts[i], patch_starts[i] + patches[i]) for i in items])
    return pixels[rows.to(pixels.device)], grid[items]


@dataclass
class VisionFeatures:
    """Per-prompt vision embeddings: image_feats[b] is [n_image_tokens_b, H] (None if no images)."""

    image_feats: list[Tensor | None]
    video_feats: list[Tensor | None]

    def select(self, prompts: list[int]) -> VisionFeatures:
        """The features of the given prompt indices (matching ``PromptBatch.select``)."""
        return VisionFeatures([self.image_feats[b] for b in prompts], [self.video_feats[b] for b in prompts])


def hf_core(model):
    """The Qwen*VLForConditionalGeneration under a VLMOps / peft wrapper."""
    if isinstance(model, VLMOps):
        model = model.hf
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class VLMOps(torch.nn.Module):
    """One module whose ``forward(op, ...)`` runs each piece the vision-once forwards use.

    Every call goes through this module's own forward, so it can be the FSDP2 root (FSDP2 gathers the
    root's parameters only in the root's forward, and requires the root to run before its children).
    ops: ``image`` / ``video`` (vision tower -> per-item features), ``embed`` (token embedding),
    ``lm`` (decoder stack -> hidden states), ``head`` (LM head).
    """

    def __init__(self, hf_model, compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.hf = hf_model
        self.compute_dtype = compute_dtype  # autocast dtype of every op; None = the weights' dtype

    @property
    def config(self):
        return hf_core(self.hf).config

    def forward(self, op: str, *args, **kwargs):
        if self.compute_dtype is None:
            return self._run(op, *args, **kwargs)
        device_type = next(self.hf.parameters()).device.type
        with torch.autocast(device_type, dtype=self.compute_dtype):
            return self._run(op, *args, **kwargs)

    def _run(self, op: str, *args, **kwargs):
        inner = hf_core(self.hf)
        if op == "image":
            return inner.model.get_image_features(*args, return_dict=True).pooler_output
        if op == "video":
            return inner.model.get_video_features(*args, return_dict=True).pooler_output
        if op == "embed":
            return inner.get_input_embeddings()(*args)
        if op == "lm":
            return inner.model.language_model(**kwargs)
        if op == "head":
            return inner.lm_head(*args)
        raise ValueError(f"unknown VLMOps op {op!r}")


def as_ops(model) -> VLMOps:
    """``model`` itself when it is already a VLMOps, else a (parameter-sharing) VLMOps around it."""
    return model if isinstance(model, VLMOps) else VLMOps(model)


def _group(features: tuple[Tensor, ...] | None, per_prompt: list[int]) -> list[Tensor | None]:
    out: list[Tensor | None] = []
    i = 0
    for n in per_prompt:
        out.append(torch.cat(features[i : i + n]) if n else None)  # type: ignore[index]
        i += n
    return out


def encode_vision(model, batch: PromptBatch) -> VisionFeatures:
    """Run the vision tower ONCE over the batch's images and videos; group the output per prompt."""
    ops = as_ops(model)
    img = vid = None
    if batch.pixel_values is not None:
        img = ops("image", batch.pixel_values, batch.image_grid_thw)
    if batch.pixel_values_videos is not None:
        vid = ops("video", batch.pixel_values_videos, batch.video_grid_thw)
    return VisionFeatures(_group(img, batch.images_per_prompt), _group(vid, batch.videos_per_prompt))


def rope_positions(model, input_ids, mm_token_type_ids, attention_mask, image_grid_thw, video_grid_thw, spg):
    """M-RoPE positions [3, B, P] and the next free position [B] for left-padded prompts."""
    core = hf_core(model).model
    kwargs: dict[str, Any] = {}
    if spg is not None:
        kwargs["second_per_grid_ts"] = spg
    if image_grid_thw is None and video_grid_thw is None:
        pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        pos = pos.masked_fill(attention_mask == 0, 0)[None].expand(3, -1, -1).contiguous()
    else:
        pos, _ = core.get_rope_index(
            input_ids,
            mm_token_type_ids=mm_token_type_ids,
            image_grid_thw=image_grid_thw,
            video_grid_thw=video_grid_thw,
            attention_mask=attention_mask,
            **kwargs,
        )
    nxt = pos.masked_fill(attention_mask[None] == 0, -1).amax(dim=(0, 2)) + 1  # [B]
    return pos, nxt


def embed_with_vision(model, input_ids: Tensor, feats: VisionFeatures, seq_to_prompt: Tensor) -> Tensor:
    """Token embeddings [N, L, H] with each sequence's prompt features scattered into its vision tokens."""
    inner = hf_core(model)
    embeds = as_ops(model)("embed", input_ids)
    order = seq_to_prompt.tolist()
    for token_id, per_prompt in (
        (inner.config.image_token_id, feats.image_feats),
        (inner.config.video_token_id, feats.video_feats),
    ):
        parts = [per_prompt[b] for b in order if per_prompt[b] is not None]
        if not parts:
            continue
        src = torch.cat(parts).to(embeds.dtype)
        mask = input_ids == token_id  # [N, L]
        if int(mask.sum()) != src.shape[0]:
            raise ValueError(
                f"image/video tokens ({int(mask.sum())}) and vision features ({src.shape[0]}) do not match; "
                "was a prompt truncated inside its vision tokens?"
            )
        embeds = embeds.masked_scatter(mask[..., None].expand_as(embeds), src)
    return embeds


def selected_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log p(token) from logits [..., V] and tokens [...] -> [...].

    fp32/fp64: gather minus logsumexp (no full log-softmax copy). Half precision: one row of dim -2 at a
    time in fp32, so no fp32 copy of more than one row's logits is made.
    """
    if logits.dtype in (torch.float32, torch.float64):
        picked = logits.gather(-1, tokens[..., None]).squeeze(-1)
        return picked - torch.logsumexp(logits, dim=-1)
    rows = []
    for row_logits, row_tokens in zip(
        logits.reshape(-1, logits.shape[-2], logits.shape[-1]), tokens.reshape(-1, tokens.shape[-1])
    ):
        lp = torch.log_softmax(row_logits.float(), dim=-1)
        rows.append(lp.gather(-1, row_tokens[:, None]).squeeze(-1))
    return torch.stack(rows).reshape(tokens.shape)


# Logits of at most this many elements exist at once in ``head_logprobs`` (2**26: 443 tokens of a 151k
# vocabulary, 256 MB in fp32); the tiny models' 1k vocabulary gives 65k tokens, i.e. one chunk.
LOGITS_BUDGET = 2**26


def _chunk_logprobs(ops: VLMOps, hidden: Tensor, tokens: Tensor, temperature: float) -> Tensor:
    logits = ops("head", hidden)  # [C, V]
    if temperature != 1.0:
        logits = logits / temperature
    return selected_logprobs(logits[None], tokens[None])[0]


def head_logprobs(
    model, hidden: Tensor, tokens: Tensor, temperature: float = 1.0, chunk_tokens: int | None = None
) -> Tensor:
    """log p(tokens) [M] from final hidden states [M, H] through the LM head, ``chunk_tokens`` at a time.

    Never more than one chunk's logits [chunk_tokens, V] exist: with grad enabled each chunk is
    checkpointed (its logits are recomputed in backward instead of kept). Default chunk: LOGITS_BUDGET
    elements of logits; when every token fits in one chunk, it runs as one plain head call.
    """
    ops = as_ops(model)
    M = hidden.shape[0]
    size = chunk_tokens or max(1, LOGITS_BUDGET // hf_core(model).lm_head.out_features)
    if M <= size:
        return _chunk_logprobs(ops, hidden, tokens, temperature)
    parts = []
    for i in range(0, M, size):
        h, t = hidden[i : i + size], tokens[i : i + size]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_chunk_logprobs, ops, h, t, temperature, use_reentrant=False))
        else:
            parts.append(_chunk_logprobs(ops, h, t, temperature))
    return torch.cat(parts)


def vision_frozen(model) -> bool:
    """True when no vision-tower parameter trains: features computed once without grad then serve the
    policy forward too (and the reference's, which shares the frozen weights)."""
    return not any(p.requires_grad for p in hf_core(model).model.visual.parameters())


def _check_features(model, feats: VisionFeatures) -> None:
    if not torch.is_grad_enabled():
        return
    parts = [f for f in feats.image_feats + feats.video_feats if f is not None]
    if parts and not all(f.requires_grad for f in parts) and not vision_frozen(model):
        raise ValueError(
            "vision features computed without grad cannot train the vision tower: recompute them with "
            "grad enabled, or freeze it (model.freeze_vision=true)"
        )


def _completion_positions(prompts: PromptBatch, seq_to_prompt: Tensor, T: int) -> Tensor:
    steps = torch.arange(T, device=seq_to_prompt.device)
    return (prompts.next_position[seq_to_prompt][:, None] + steps[None]).expand(3, -1, -1)  # [3, N, T]


def _full_hidden(model, prompts, feats, seq_to_prompt, completion_ids, attn) -> Tensor:
    """N full sequences (prompt + completion), padded: hidden states [N, T, H] predicting the completion."""
    P, T = prompts.input_ids.shape[1], completion_ids.shape[1]
    input_ids = torch.cat([prompts.input_ids[seq_to_prompt], completion_ids], dim=1)  # [N, P+T]
    position_ids = torch.cat(
        [prompts.position_ids[:, seq_to_prompt], _completion_positions(prompts, seq_to_prompt, T)], dim=2
    )  # [3, N, P+T]
    embeds = embed_with_vision(model, input_ids, feats, seq_to_prompt)
    out = as_ops(model)(
        "lm", inputs_embeds=embeds, attention_mask=attn, position_ids=position_ids, use_cache=False
    )
    return out.last_hidden_state[:, P - 1 : P + T - 1]


def _shared_prefix_hidden(model, prompts, feats, seq_to_prompt, completion_ids, attn) -> Tensor | None:
    """Each prompt once, its keys/values shared by its sequences: hidden states [N, T, H] predicting the
    completion, or None when the decoder dropped the cache (a transformers without the checkpoint flag)."""
    ops = as_ops(model)
    T = completion_ids.shape[1]
    layers = hf_core(model).model.language_model.layers
    capture = PrefixCapture(len(layers))
    prompt_embeds = embed_with_vision(
        model, prompts.input_ids, feats, torch.arange(prompts.size, device=seq_to_prompt.device)
    )
    with checkpointable_cache(layers):
        pre = ops("lm", inputs_embeds=prompt_embeds, attention_mask=prompts.attention_mask,
                  position_ids=prompts.position_ids, cache=capture, use_cache=False)  # fmt: skip
        if not capture.complete:
            return None
        first = pre.last_hidden_state[seq_to_prompt, -1:]  # [N, 1, H] predicts completion token 0
        if T == 1:
            return first
        out = ops("lm", inputs_embeds=ops("embed", completion_ids[:, :-1]),  # token t predicts t+1
                  attention_mask=attn[:, :-1], position_ids=_completion_positions(prompts, seq_to_prompt, T)[..., :-1],
                  cache=SharedPrefixCache(capture, seq_to_prompt), use_cache=False)  # fmt: skip
    return torch.cat([first, out.last_hidden_state], dim=1)  # [N, T, H]


def _packed_hidden(model, prompts, feats, seq_to_prompt, completion_ids, completion_mask) -> Tensor:
    """The N sequences without padding, packed in one row [1, L]: hidden states [M, H] at the M
    positions that predict the completion's (masked-in) tokens, in row-major [N, T] order.

    Positions: [4, 1, L]: row 0 restarts at 0 for each sequence (how transformers tells packed sequences
    apart: a block-diagonal causal mask for sdpa/eager, varlen kernels for flash-attention), rows 1-3
    the M-RoPE positions of the padded layout.
    """
    N, T = completion_ids.shape
    P = prompts.input_ids.shape[1]
    ids = torch.cat([prompts.input_ids[seq_to_prompt], completion_ids], dim=1)  # [N, P+T]
    valid = torch.cat([prompts.attention_mask[seq_to_prompt], completion_mask], dim=1).bool()  # [N, P+T]
    mrope = torch.cat(
        [prompts.position_ids[:, seq_to_prompt], _completion_positions(prompts, seq_to_prompt, T)], dim=2
    )  # [3, N, P+T]
    text = valid.long().cumsum(1) - 1  # [N, P+T] position inside each sequence
    position_ids = torch.cat([text[valid][None], mrope[:, valid]], dim=0)[:, None]  # [4, 1, L]
    embeds = embed_with_vision(model, ids[valid][None], feats, seq_to_prompt)  # [1, L, H]
    # no cache (the text config's use_cache defaults to True): with one, transformers would not look for
    # packed sequences in the positions
    out = as_ops(model)("lm", inputs_embeds=embeds, position_ids=position_ids, use_cache=False)
    where = (valid.flatten().long().cumsum(0) - 1).view(N, P + T)  # packed index of each position
    pick = where[:, P - 1 : P + T - 1][completion_mask.bool()]  # [M]
    return out.last_hidden_state[0, pick]


def completion_logprobs(
    model,
    prompts: PromptBatch,
    feats: VisionFeatures,
    seq_to_prompt: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    share_prefix: bool = True,
    packed: bool = False,
    chunk_tokens: int | None = None,
) -> Tensor:
    """Log-probs [N, T] of the completion tokens under ``model`` (grad flows if enabled); 0 on padding.

    seq_to_prompt: [N] which prompt of ``prompts`` each sequence continues.
    completion_ids / completion_mask: [N, T] (right-padded). Logits are divided by ``temperature`` so
    the log-probs are those of the distribution the rollout sampled from.
    feats: the prompts' vision features (``encode_vision``); computed without grad they may serve
    every forward of a step when the vision tower is frozen (``vision_frozen``), and the no-grad
    forwards (reference, old policy) always.
    share_prefix: run each prompt ONCE (B sequences) and let its G completions attend to its recorded
    keys/values (N x T tokens): exact, with or without gradient checkpointing, and the prompt's compute
    is not repeated G times. False runs the N full sequences.
    packed: run the N full sequences without padding, packed into one row (needs share_prefix=False).
    chunk_tokens: tokens per LM-head chunk (``head_logprobs``); only masked-in tokens reach the head.
    """
    if packed and share_prefix:
        raise ValueError("completion_logprobs: packed runs full sequences; pass share_prefix=False")
    _check_features(model, feats)
    mask = completion_mask.bool()
    attn = torch.cat(
        [prompts.attention_mask[seq_to_prompt], completion_mask.to(prompts.attention_mask.dtype)], 1
    )  # [N, P+T]
    if packed:
        hidden = _packed_hidden(model, prompts, feats, seq_to_prompt, completion_ids, completion_mask)
    else:
        full = None
        if share_prefix:
            full = _shared_prefix_hidden(model, prompts, feats, seq_to_prompt, completion_ids, attn)
        if full is None:
            full = _full_hidden(model, prompts, feats, seq_to_prompt, completion_ids, attn)
        hidden = full[mask]  # [M, H]
    lp = head_logprobs(model, hidden, completion_ids[mask], temperature, chunk_tokens)  # [M]
    return torch.zeros(mask.shape, dtype=lp.dtype, device=lp.device).masked_scatter(mask, lp)
