"""Key/value caches for the vision-once forwards, as transformers ``Cache`` objects the decoder accepts.

- ``DecodeCache``: generation. Keys/values live in buffers preallocated for prompt + max_new_tokens and
  are written in place (no per-step concatenation); attention reads the filled prefix as a view.
  ``repeat_rows`` copies the B prefilled prompts to their G completions, ``keep_rows`` drops finished
  sequences from the batch (compaction).
- ``PrefixCapture`` + ``SharedPrefixCache``: the training forward with a shared prompt. The prompt pass
  records each layer's keys/values ([B, H, P, D], in the autograd graph); the completion pass reads them
  back for its N = B*G sequences (each prepends its prompt's keys/values) and stores nothing, so it is
  safe to replay under gradient checkpointing (``checkpointable_cache``).

Shapes: keys/values are [batch, kv_heads, length, head_dim] (transformers' layout).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor
from transformers.cache_utils import Cache, CacheLayerMixin


def cache_of(out) -> Cache | None:
    """The cache a decoder forward returned (transformers 5.x names it ``cache``, 4.x ``past_key_values``)."""
    return out.cache if hasattr(out, "cache") else out.past_key_values


class _DecodeLayer(CacheLayerMixin):
    """One layer's preallocated keys/values [n, H, capacity, D]; ``length`` of them are filled."""

    is_sliding = False

    def __init__(self, capacity: int):
        super().__init__()
        self.capacity = capacity
        self.length = 0
        self.rows = 0  # the batch rows in use (the buffers may hold more after ``keep_rows``)

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        n, h, _, d = key_states.shape
        self.keys = key_states.new_empty((n, h, self.capacity, d))
        self.values = value_states.new_empty((n, h, self.capacity, value_states.shape[-1]))
        self.rows = n
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if end > self.capacity:
            raise ValueError(f"DecodeCache holds {self.capacity} positions; asked to write up to {end}")
        self.keys[: self.rows, :, self.length : end] = key_states
        self.values[: self.rows, :, self.length : end] = value_states
        self.length = end
        return self.keys[: self.rows, :, :end], self.values[: self.rows, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.capacity


class DecodeCache(Cache):
    """Preallocated keys/values for ``capacity`` positions per sequence, written in place."""

    def __init__(self, num_layers: int, capacity: int):
        super().__init__(layers=[_DecodeLayer(capacity) for _ in range(num_layers)])

    def repeat_rows(self, repeats: int) -> None:
        """[B, ...] -> [B*repeats, ...]: row b becomes rows b*repeats .. b*repeats+repeats-1 (one copy)."""
        for layer in self.layers:
            for name in ("keys", "values"):
                old = getattr(layer, name)[: layer.rows]
                b, h, cap, d = old.shape
                new = old.new_empty((b * repeats, h, cap, d))
                new.view(b, repeats, h, cap, d)[:, :, :, : layer.length] = old[:, None, :, : layer.length]
                setattr(layer, name, new)
            layer.rows *= repeats

    def keep_rows(self, index: Tensor) -> None:
        """Keep the batch rows ``index`` (increasing), moved to the front in place; the rest are dropped."""
        for layer in self.layers:
            for buf in (layer.keys, layer.values):
                buf[: index.numel(), :, : layer.length] = buf[index, :, : layer.length]
            layer.rows = index.numel()


class _CaptureLayer(CacheLayerMixin):
    """Records the keys/values a layer computes (overwriting: a checkpoint replay records them again)."""

    is_sliding = False

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        self.is_initialized = True

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        self.keys, self.values, self.is_initialized = key_states, value_states, True
        return key_states, value_states

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, 0  # the prompt pass starts from an empty cache

    def get_seq_length(self) -> int:
        return 0

    def get_max_length(self) -> int:
        return -1


class PrefixCapture(Cache):
    """Pass as ``cache`` to the prompt pass: afterwards ``layers[i].keys/values`` are layer i's [B, H, P, D]."""

    def __init__(self, num_layers: int):
        super().__init__(layers=[_CaptureLayer() for _ in range(num_layers)])

    @property
    def complete(self) -> bool:
        """Every layer recorded its keys/values (False when a layer dropped the cache)."""
        return all(layer.keys is not None for layer in self.layers)


class _PrefixLayer(CacheLayerMixin):
    """Read-only: returns [prefix keys of each sequence's prompt ; the new keys], stores nothing."""

    is_sliding = False

    def __init__(self, keys: Tensor, values: Tensor, seq_to_prompt: Tensor):
        super().__init__()
        self.prefix_keys, self.prefix_values, self.seq_to_prompt = keys, values, seq_to_prompt
        self.is_initialized = True

    def lazy_initialization(self, key_states: Tensor, value_states: Tensor) -> None:
        return None

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        keys = torch.cat([self.prefix_keys[self.seq_to_prompt], key_states], dim=-2)  # [N, H, P+T, D]
        values = torch.cat([self.prefix_values[self.seq_to_prompt], value_states], dim=-2)
        return keys, values

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.prefix_keys.shape[-2] + query_length, 0

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2]

    def get_max_length(self) -> int:
        return -1


class SharedPrefixCache(Cache):
    """The captured prompt keys/values [B, H, P, D] seen by N sequences (``seq_to_prompt`` [N])."""

    def __init__(self, capture: PrefixCapture, seq_to_prompt: Tensor):
        super().__init__(layers=[_PrefixLayer(c.keys, c.values, seq_to_prompt) for c in capture.layers])


@contextmanager
def checkpointable_cache(decoder_layers) -> Iterator[bool]:
    """Let the decoder layers keep a cache under gradient checkpointing while the block runs.

    transformers' ``GradientCheckpointingLayer`` drops the cache of a checkpointed layer unless the layer
    sets ``_can_checkpoint_with_cache`` (meant for caches a backward replay may safely see twice). Both
    caches above are: ``PrefixCapture`` overwrites, ``SharedPrefixCache`` only reads. The flag is read
    when a layer is called, so setting it on the instances for the duration of the forward is enough.
    Yields False (and changes nothing) on a transformers without the flag.
    """
    layers = list(decoder_layers)
    if not all(hasattr(layer, "_can_checkpoint_with_cache") for layer in layers):
        yield False
        return
    had = [layer.__dict__.get("_can_checkpoint_with_cache") for layer in layers]
    for layer in layers:
        layer._can_checkpoint_with_cache = True
    try:
        yield True
    finally:
        for layer, old in zip(layers, had):
            if old is None:
                del layer._can_checkpoint_with_cache
            else:
                layer._can_checkpoint_with_cache = old
