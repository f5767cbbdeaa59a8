"""Load policy, reference and processor from a local Qwen2.5-VL or Qwen2-VL checkpoint, offline.

Attention: ``flash_attention_2`` only when flash-attn imports and CUDA is present, else ``sdpa``.
Precision: float32 master weights; forwards autocast to bf16 on a CUDA device that supports it
(``model.compute_dtype``), plain fp32 on CPU. ``model.dtype=bfloat16`` trains bf16 weights instead.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmrft.config import ConfigError

SUPPORTED_MODEL_TYPES = ("qwen2_5_vl", "qwen2_vl")


@dataclass
class LoadedModel:
    """A policy (trainable), an optional frozen reference, and the processor."""

    policy: Any
    reference: Any | None
    processor: Any
    model_type: str
    compute_dtype: torch.dtype | None = None


def pick_attention(requested: str, device: torch.device) -> str:
    """Resolve the ``model.attn_implementation`` config field.

    ``auto`` picks ``flash_attention_2`` only where it can run (CUDA + flash-attn importable), else ``sdpa``.
    An explicit ``flash_attention_2`` without flash-attn fails here with the extra to install.
    """
    has_fa = importlib.util.find_spec("flash_attn") is not None
    if requested == "auto":
        return "flash_attention_2" if (device.type == "cuda" and has_fa) else "sdpa"
    if requested == "flash_attention_2" and not (device.type == "cuda" and has_fa):
        raise ConfigError(
            "model.attn_implementation=flash_attention_2 needs CUDA and flash-attn "
            "(pip install 'mmrft[gpu]'); use 'auto' or 'sdpa'"
        )
    return requested


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """Resolve ``model.dtype`` (the trained weights): ``auto`` keeps float32 master weights."""
    if requested == "auto":
        return torch.float32
    if requested not in _DTYPES:
        raise ValueError(f"model.dtype must be one of auto, {', '.join(_DTYPES)}; got {requested!r}")
    return _DTYPES[requested]


def pick_compute_dtype(requested: str, device: torch.device) -> torch.dtype | None:
    """Resolve ``model.compute_dtype``: the autocast dtype of forwards, or None for plain float32.

    ``auto`` is bf16 mixed precision on a CUDA device that supports it (fp32 master weights, bf16
    matmuls), and off on CPU.
    """
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if requested not in _DTYPES:
        raise ValueError(f"model.compute_dtype must be one of auto, {', '.join(_DTYPES)}; got {requested!r}")
    return None if requested == "float32" else _DTYPES[requested]


def check_checkpoint(path: str | Path) -> str:
    """Return the checkpoint's model_type, or raise naming the path and what is missing."""
    import json

    p = Path(path)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise FileNotFoundError(
            f"model.path={str(path)!r}: no config.json there (expected a local Qwen2.5-VL/Qwen2-VL checkpoint "
            "directory; build a tiny one with `mmrft make-tiny DIR`)"
        )
    model_type = json.loads(cfg.read_text()).get("model_type", "")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"model.path={str(path)!r}: model_type {model_type!r} is not supported "
            f"(expected one of {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return model_type


def load_processor(path: str | Path, min_pixels: int | None = None, max_pixels: int | None = None):
    """The checkpoint's processor, local files only. Images reach it already smart-resized by
    ``data_pipelines``; the pixel bounds are set to match so it never resizes them again."""
    from transformers import AutoProcessor

    kwargs: dict[str, Any] = {}
    if min_pixels is not None and max_pixels is not None:
        kwargs["size"] = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return AutoProcessor.from_pretrained(str(path), local_files_only=True, **kwargs)


def load_model(
    path: str | Path,
    *,
    device: torch.device,
    dtype: str = "auto",
    compute_dtype: str = "auto",
    attn_implementation: str = "auto",
    with_reference: bool = False,
    gradient_checkpointing: bool = False,
    freeze_vision: bool = False,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> LoadedModel:
    """Load the policy (train mode), a frozen reference copy when asked, and the processor."""
    from transformers import AutoModelForImageTextToText

    model_type = check_checkpoint(path)
    torch_dtype = pick_dtype(dtype, device)
    amp_dtype = pick_compute_dtype(compute_dtype, device)
    attn = pick_attention(attn_implementation, device)

    def _load(weights_dtype):
        return AutoModelForImageTextToText.from_pretrained(
            str(path), dtype=weights_dtype, attn_implementation=attn, local_files_only=True
        ).to(device)

    policy = _load(torch_dtype)
    policy.config.use_cache = False
    if gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if freeze_vision:
        for p in vision_tower(policy).parameters():
            p.requires_grad_(False)
    policy.train()

    reference = None
    if with_reference:
        reference = _load(amp_dtype or torch_dtype)  # frozen: no master copy needed
        reference.eval()
        reference.requires_grad_(False)
    processor = load_processor(path, min_pixels, max_pixels)
    return LoadedModel(policy, reference, processor, model_type, amp_dtype)


def vision_tower(model) -> torch.nn.Module:
    """The vision encoder of a Qwen2-VL / Qwen2.5-VL model (works through a peft wrapper too)."""
    from mmrft.models.forward import hf_core

    return hf_core(model).model.visual
