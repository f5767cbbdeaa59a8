"""Forward passes that run the vision tower once per image, shared by every completion of a prompt.

A step sees B prompts and G completions each (N = B*G sequences). The vision tower encodes the B
prompts' images once (``encode_vision``); generation prefills the B prompts once and copies the KV
cache G times; the training forward scatters each prompt's features into its G sequences. M-RoPE
positions are computed once per prompt (``get_rope_index``) and continue 1-D over the completion.

Works for Qwen2.5-VL and Qwen2-VL through ``model.model.{visual, language_model, get_rope_index}``
(transformers 5.x) and through a peft wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


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


def _inner(model):
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
        return _inner(self.hf).config

    def forward(self, op: str, *args, **kwargs):
        if self.compute_dtype is None:
            return self._run(op, *args, **kwargs)
        device_type = next(self.hf.parameters()).device.type
        with torch.autocast(device_type, dtype=self.compute_dtype):
            return self._run(op, *args, **kwargs)

    def _run(self, op: str, *args, **kwargs):
        inner = _inner(self.hf)
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
    core = _inner(model).model
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
    inner = _inner(model)
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

    fp32/fp64: gather minus logsumexp (no full log-softmax copy). Half precision: one row at a time in
    fp32, so no fp32 copy of the whole [N, T, V] logits is ever made.
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


def completion_logprobs(
    model,
    prompts: PromptBatch,
    feats: VisionFeatures,
    seq_to_prompt: Tensor,
    completion_ids: Tensor,
    completion_mask: Tensor,
    temperature: float = 1.0,
    share_prefix: bool = True,
) -> Tensor:
    """Log-probs [N, T] of the completion tokens under ``model`` (grad flows if enabled).

    seq_to_prompt: [N] which prompt of ``prompts`` each sequence continues.
    completion_ids / completion_mask: [N, T] (right-padded). Logits are divided by ``temperature`` so
    the log-probs are those of the distribution the rollout sampled from.
    share_prefix: run each prompt ONCE (B sequences), copy its key/value cache to its G completions
    inside the autograd graph, then run only the completion tokens (N x T): exact, and the prompt's
    compute is not repeated G times. False runs the N full sequences (needed with gradient
    checkpointing, which cannot carry a cache).
    """
    ops = as_ops(model)
    T = completion_ids.shape[1]
    steps = torch.arange(T, device=completion_ids.device)
    comp_pos = (prompts.next_position[seq_to_prompt][:, None] + steps[None]).expand(3, -1, -1)  # [3, N, T]
    attn = torch.cat(
        [prompts.attention_mask[seq_to_prompt], completion_mask.to(prompts.attention_mask.dtype)], 1
    )  # [N, P+T]
    if share_prefix:
        B = prompts.size
        prompt_embeds = embed_with_vision(
            model, prompts.input_ids, feats, torch.arange(B, device=steps.device)
        )
        pre = ops("lm", inputs_embeds=prompt_embeds, attention_mask=prompts.attention_mask,
                  position_ids=prompts.position_ids, use_cache=True)  # fmt: skip
        cache = pre.cache if hasattr(pre, "cache") else pre.past_key_values
        cache.batch_select_indices(seq_to_prompt)  # [B] -> [N], differentiable indexing
        comp_embeds = ops("embed", completion_ids[:, :-1])  # token t predicts token t+1
        first = pre.last_hidden_state[seq_to_prompt, -1:]  # [N, 1, H] predicts completion token 0
        if T > 1:
            out = ops("lm", inputs_embeds=comp_embeds, attention_mask=attn[:, :-1], position_ids=comp_pos[:, :, :-1],
                      cache=cache, use_cache=True)  # fmt: skip
            hidden = torch.cat([first, out.last_hidden_state], dim=1)  # [N, T, H]
        else:
            hidden = first
    else:
        P = prompts.input_ids.shape[1]
        input_ids = torch.cat([prompts.input_ids[seq_to_prompt], completion_ids], dim=1)  # [N, P+T]
        position_ids = torch.cat([prompts.position_ids[:, seq_to_prompt], comp_pos], dim=2)  # [3, N, P+T]
        embeds = embed_with_vision(model, input_ids, feats, seq_to_prompt)
        out = ops("lm", inputs_embeds=embeds, attention_mask=attn, position_ids=position_ids)
        hidden = out.last_hidden_state[:, P - 1 : P + T - 1]  # [N, T, H] predicts completion tokens
    logits = ops("head", hidden)  # [N, T, V]
    if temperature != 1.0:
        logits = logits / temperature
    return selected_logprobs(logits, completion_ids)
