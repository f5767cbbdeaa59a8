"""Token sampling for rollouts: logit filters and counter-based, per-prompt reproducible randomness.

The random number behind token ``t`` of completion ``g`` of a prompt is a hash of (the prompt's seed,
g, t), computed with integer tensor ops on the device: nothing is drawn on the host, and a completion's
tokens do not depend on which other prompts share its batch, on their order, on the rank or world size,
or on which finished sequences were already dropped from the decode batch. One uniform per sequence
and token picks the token by inverse CDF over the filtered distribution (B*G numbers a token, where
Gumbel-max would need B*G*vocab).

The hash is Chris Wellons' ``lowbias32`` (an invertible 32-bit mixer). Values are uint32 held in int64
and every product is split into 16-bit halves, so no intermediate overflows on any backend.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


@dataclass
class SamplingParams:
    """How completions are drawn. temperature 0 means greedy."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0


def _mul32(x, c: int):
    """(x * c) mod 2**32 for uint32 values x (int or int64 tensor) without leaving 49 bits."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def mix32(x):
    """lowbias32: a bijective 32-bit hash of uint32 values (a Python int or an int64 tensor)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def sequence_keys(seeds: list[int], group_size: int, device: torch.device) -> Tensor:
    """[B*G] 32-bit keys, group-contiguous: key of completion g of prompt b from (seeds[b], g)."""
    keys = []
    for seed in seeds:
        s = int(seed) & ((1 << 64) - 1)
        prompt = mix32((s & _M32) ^ mix32((s >> 32) ^ 0x3C6EF372))
        keys.extend(mix32(prompt ^ mix32(g ^ 0x68E31DA4)) for g in range(group_size))
    return torch.tensor(keys, dtype=torch.long, device=device)


def uniforms(keys: Tensor, step: int) -> Tensor:
    """[n] floats in (0, 1) for token ``step`` of the sequences with these keys (24 random bits each)."""
    h = mix32(keys ^ mix32(step ^ 0x1B873593))
    return ((h >> 8).float() + 0.5) * (1.0 / (1 << 24))


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Top-k and top-p on logits [n, V] already divided by the temperature (filtered entries: -inf)."""
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        cum = probs.cumsum(-1)
        drop_sorted = cum - probs > top_p  # keep the smallest prefix whose mass reaches top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def draw(logits: Tensor, u: Tensor) -> Tensor:
    """Token [n] from filtered logits [n, V] (fp32) by inverse CDF at uniforms u [n].

    Picks the first token whose cumulative probability exceeds u * total; a token of probability 0 is
    never picked (when rounding puts the target at the very top, the last token with mass is taken).
    """
    probs = torch.softmax(logits, dim=-1)
    cdf = probs.cumsum(-1)  # [n, V]
    target = (u * cdf[:, -1])[:, None]
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # [n], V when target >= total
    V = logits.shape[-1]
    if bool((idx >= V).any()):
        last = V - 1 - (probs > 0).flip(-1).to(torch.uint8).argmax(-1)  # the last token with mass
        idx = torch.where(idx >= V, last, idx)
    return idx
