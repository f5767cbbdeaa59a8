"""Run configuration: nested dataclasses, one per component, each field with its one-line help.

``load_config(path, overrides)`` reads a YAML file (or the defaults when ``path`` is None) and applies
dotted ``key=value`` overrides (``grpo.beta=0.04``). Unknown keys, wrong types and values outside a
field's choices fail at load with one line naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mmrft.errors import UserError

SEED_MAX = 2**32 - 1  # numpy's seed range


def _f(
    default: Any,
    help: str,
    choices: tuple | None = None,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **kw,
) -> Any:
    """A config field: its default, one-line help, and what values are allowed (``choices``, or a range:
    ``ge`` / ``gt`` lower bound, ``le`` / ``lt`` upper bound, checked at load)."""
    md: dict[str, Any] = {"help": help}
    if choices:
        md["choices"] = choices
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    if bounds:
        md["range"] = bounds
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md, **kw)
    return field(default=default, metadata=md, **kw)


@dataclass
class ModelConfig:
    path: str | None = _f(None, "Local Qwen2.5-VL / Qwen2-VL checkpoint directory (offline).")
    tiny: str | None = _f(
        None, "Build a tiny Qwen2.5-VL of this preset at run start instead of `path`.", ("tiny", "small")
    )
    tiny_seed: int = _f(0, "Seed of the tiny model's weights and tokenizer.", ge=0, le=SEED_MAX)
    dtype: str = _f(
        "auto",
        "Dtype of the trained weights; auto = float32 master weights (bfloat16 halves memory, less exact).",
        ("auto", "float32", "bfloat16", "float16"),
    )
    compute_dtype: str = _f(
        "auto",
        "Autocast dtype of forwards; auto = bfloat16 on a CUDA device that supports it, else off (float32).",
        ("auto", "float32", "bfloat16", "float16"),
    )
    attn_implementation: str = _f(
        "auto",
        "auto = flash_attention_2 where it can run, else sdpa.",
        ("auto", "sdpa", "eager", "flash_attention_2"),
    )
    gradient_checkpointing: bool = _f(False, "Recompute activations in backward to save memory.")
    freeze_vision: bool = _f(False, "Freeze the vision tower (its parameters get no gradient).")
    lora_r: int = _f(0, "LoRA rank on the language model's linear layers; 0 trains all weights.", ge=0)
    lora_alpha: int = _f(32, "LoRA alpha.", gt=0)
    lora_dropout: float = _f(0.05, "LoRA dropout.", ge=0, lt=1)
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA wraps.")


@dataclass
class SyntheticConfig:
    task: str = _f(
        "classification",
        "Built-in synthetic task (temporal_grounding writes MP4 videos).",
        ("classification", "counting", "grounding", "detection", "temporal_grounding"),
    )
    n_train: int = _f(4000, "Training records to generate.", ge=1)
    n_eval: int = _f(500, "Held-out records to generate (different seed).", ge=1)
    sft_examples: int = _f(64, "Labelled records for the SFT warm-up (taken from the training split).", ge=1)
    seed: int = _f(0, "Generator seed (the held-out split uses seed + 1).", ge=0, le=SEED_MAX - 1)
    image_size: int = _f(112, "Side of the square synthetic images, in pixels.", ge=28)
    prompt_style: str = _f(
        "answer_only",
        "Answer format the prompts ask for (plain: the bare answer, no tags).",
        ("answer_only", "think_answer", "plain"),
    )
    question: str = _f("shape", "What classification asks for: the shape, or its colour.", ("shape", "color"))
    max_count: int = _f(5, "Most target shapes in a counting or detection image.", ge=1, le=20)
    distractors: int | None = _f(
        None, "Most shapes of other kinds per image; None = the task's default (0 counting, 2 else).", ge=0
    )
    min_size_frac: float | None = _f(
        None, "Smallest shape side as a fraction of image_size; None = the task's default.", gt=0, le=1
    )
    max_size_frac: float | None = _f(
        None, "Largest shape side as a fraction of image_size; None = the task's default.", gt=0, le=1
    )
    empty_frac: float = _f(
        0.2, 'Share of detection records with no target (the "no objects" case).', ge=0, le=1
    )
    combos: str = _f(
        "all",
        "seen: train and held-out images leave out the (shape, colour) pairs the shifted split uses.",
        ("all", "seen"),
    )
    n_shifted: int = _f(
        0, "Records of a shifted split (unseen shape/colour pairs, more distractors); 0 = none.", ge=0
    )
    shifted_extra_distractors: int = _f(2, "Distractors the shifted split adds to `distractors`.", ge=0)
    video_fps: int = _f(2, "Frames per second of the synthetic videos (temporal_grounding).", ge=1)
    min_duration: int = _f(6, "Shortest synthetic video, in whole seconds.", ge=3)
    max_duration: int = _f(8, "Longest synthetic video, in whole seconds.", ge=3)


@dataclass
class DataConfig:
    train_file: str | None = _f(None, "Training JSONL; None uses the built-in synthetic task.")
    eval_file: str | None = _f(None, "Held-out JSONL for evaluation; None uses the synthetic held-out split.")
    sft_file: str | None = _f(
        None, "JSONL for the SFT stage; None uses `train_file` (or the synthetic split)."
    )
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig, metadata={"help": "Built-in task."})
    min_pixels: int = _f(4 * 28 * 28, "Smallest image area after smart-resize.", gt=0)
    max_pixels: int = _f(1280 * 28 * 28, "Largest image area after smart-resize.", gt=0)
    video_fps: float = _f(2.0, "Frames per second sampled from videos.", gt=0)
    video_min_frames: int = _f(4, "Fewest frames sampled from one video.", ge=2)
    video_max_frames: int = _f(32, "Most frames sampled from one video.", ge=2)
    video_min_pixels: int = _f(
        128 * 28 * 28, "Smallest frame area after resize (qwen-vl-utils: 128 tokens).", gt=0
    )
    video_max_pixels: int = _f(
        768 * 28 * 28, "Largest frame area after resize (qwen-vl-utils: 768 tokens).", gt=0
    )
    video_total_pixels: int = _f(
        3584 * 28 * 28, "Pixel budget of all sampled frames of a video together.", gt=0
    )
    on_bad_record: str = _f(
        "error", "error: stop naming the record; skip: skip and count.", ("error", "skip")
    )
    shuffle: bool = _f(True, "Shuffle the training records each epoch (seeded).")


@dataclass
class RolloutConfig:
    group_size: int = _f(8, "G: completions sampled per prompt (>= 2 for group advantages).", ge=2)
    max_prompt_length: int = _f(
        1024, "Longest prompt in tokens, vision tokens included (never truncated).", ge=1
    )
    max_completion_length: int = _f(64, "Most tokens generated per completion.", ge=1)
    temperature: float = _f(1.0, "Sampling temperature for rollouts (0 = greedy).", ge=0)
    top_p: float = _f(1.0, "Nucleus sampling mass for rollouts.", gt=0, le=1)
    top_k: int = _f(0, "Top-k for rollouts; 0 = off.", ge=0)
    engine: str = _f(
        "hf",
        "Rollout engine: hf (mmrft's decode loop) or vllm (a colocated vLLM; docs/vllm.md).",
        ("hf", "vllm"),
    )
    sync_every: int = _f(
        1,
        "vllm: push the policy's weights to the engine every N GRPO steps (rollouts lag <= N - 1 steps).",
        ge=1,
    )
    tensor_parallel_size: int = _f(1, "vllm: GPUs one engine spans (tensor parallel).", ge=1)
    gpu_memory_utilization: float = _f(
        0.5, "vllm: fraction of the GPU the engine may take (weights + KV cache).", gt=0, le=1
    )
    kv_cache_gb: float = _f(0.0, "vllm: KV cache in GiB; 0 = from gpu_memory_utilization (CPU: 1 GiB).", ge=0)
    sleep_mode: bool = _f(False, "vllm: free the engine's GPU memory between rollouts (CUDA/ROCm only).")
    enforce_eager: bool = _f(False, "vllm: no torch.compile / CUDA graphs (faster start, slower decode).")
    dtype: str = _f(
        "auto",
        "vllm: engine weights dtype; auto = bfloat16 on CUDA, float32 on CPU.",
        ("auto", "float32", "bfloat16", "float16"),
    )
    max_images_per_prompt: int = _f(4, "vllm: most images one prompt may carry (memory is reserved).", ge=0)
    max_videos_per_prompt: int = _f(1, "vllm: most videos one prompt may carry.", ge=0)
    enable_prefix_caching: bool = _f(True, "vllm: share a prompt's prefix KV cache between its G samples.")


@dataclass
class GRPOConfig:
    steps: int = _f(100, "GRPO optimiser steps (one rollout batch each, times num_iterations).", ge=0)
    beta: float = _f(0.0, "KL coefficient to the frozen reference (k3); 0 loads no reference model.", ge=0)
    epsilon_low: float = _f(0.2, "Lower ratio clip: ratios below 1 - epsilon_low are clipped.", ge=0, lt=1)
    epsilon_high: float = _f(0.2, "Upper ratio clip (DAPO clip-higher uses 0.28).", ge=0)
    scale_rewards: str = _f("group", "Advantage scaling by std.", ("group", "batch", "none"))
    loss_aggregation: str = _f(
        "token_mean",
        "How per-token losses are averaged.",
        ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"),
    )
    importance_level: str = _f(
        "token", "token (GRPO) or sequence (GSPO) importance ratios.", ("token", "sequence")
    )
    num_iterations: int = _f(1, "mu: policy updates per rollout batch (old log-probs stored when > 1).", ge=1)
    drop_zero_variance_groups: bool = _f(False, "Drop groups whose rewards are all equal (dynamic sampling).")
    tis_cap: float | None = _f(
        None,
        "Truncated importance sampling: weight each token's loss by min(exp(logp_trainer - logp_rollout), cap).",
        gt=0,
    )
    guidance: str = _f(
        "none",
        "reference: a group whose every completion scores below guidance_threshold gets the record's "
        "reference answer (its SFT target) in place of its last completion, trained off-policy "
        "(docs/rft.md); none: off.",
        ("none", "reference"),
    )
    guidance_threshold: float = _f(
        1.0, "Guidance fires for a group whose every total reward is below this (NaN counts as below)."
    )
    guidance_gamma: float = _f(
        0.1, "LUFFY's policy shaping of the reference tokens: their ratio p becomes p / (p + gamma).", gt=0
    )


@dataclass
class RewardSpec:
    name: str = _f("accuracy", "Registry name, 'pkg.module:fn' or 'path/file.py:fn'.")
    weight: float = _f(1.0, "Weight in the summed reward.")
    params: dict = _f({}, "Keyword parameters passed to the reward function.")
    timeout_s: float = _f(
        600.0,
        "Longest one call of this reward (a whole batch) may take; past it the step fails (0 = no limit).",
        ge=0,
    )


@dataclass
class SFTConfig:
    steps: int = _f(0, "SFT steps before GRPO (0 = no SFT stage).", ge=0)
    lr: float = _f(1e-3, "SFT learning rate.", ge=0)
    batch_size: int = _f(16, "Records per SFT step (global).", ge=1)


@dataclass
class RejectionConfig:
    rounds: int = _f(
        0, "Rejection-sampling fine-tuning rounds between the SFT warm-up and GRPO (0 = no such stage).", ge=0
    )
    records: int = _f(
        256, "Training records sampled per round (0 = all; a new seeded slice each round).", ge=0
    )
    k: int = _f(8, "Completions sampled per record in a round's first pass.", ge=1)
    temperature: float = _f(1.0, "Sampling temperature of the rounds (top_p / top_k follow rollout).", gt=0)
    threshold: float = _f(
        1.0, "A completion is accepted when its total reward is >= this (and it is not truncated)."
    )
    min_correct: int = _f(
        0, "DART budget: records with fewer accepted samples get further passes of k (0 = one pass).", ge=0
    )
    max_samples: int = _f(32, "DART budget: most completions sampled for one record in a round.", ge=1)
    keep_truncated: bool = _f(
        False, "Also accept completions that hit rollout.max_completion_length without a stop token."
    )
    dedup: bool = _f(True, "Keep each distinct accepted answer of a record once (whitespace-normalised).")
    batch_size: int = _f(16, "Prompts per generation batch while sampling.", ge=1)
    sft_steps: int = _f(20, "SFT steps on the round's accepted set.", ge=0)
    sft_lr: float = _f(
        1e-4, "Learning rate of each round's SFT (a fresh AdamW per round, cosine decay).", ge=0
    )
    sft_batch_size: int = _f(16, "Accepted answers per SFT step (global).", ge=1)


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/quickstart", "Run directory: metrics, samples, checkpoints, summary.")
    seed: int = _f(0, "Seed for weights init (tiny), data order and sampling.", ge=0, le=SEED_MAX)
    device: str = _f("auto", "auto = cuda when available, else cpu.", ("auto", "cpu", "cuda"))
    prompts_per_step: int = _f(16, "B: prompts per GRPO step, over all processes.", ge=1)
    micro_batch_size: int = _f(64, "Sequences per forward/backward (a multiple of group_size).", ge=1)
    lr: float = _f(1e-5, "Peak learning rate (AdamW).", ge=0)
    weight_decay: float = _f(0.0, "AdamW weight decay.", ge=0)
    adam_betas: list = _f([0.9, 0.99], "AdamW betas: two numbers in [0, 1).")
    warmup_steps: int = _f(0, "Linear warmup steps before cosine decay.", ge=0)
    min_lr_ratio: float = _f(0.1, "Cosine decays to lr * min_lr_ratio.", ge=0, le=1)
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 = off.", ge=0)
    log_every: int = _f(1, "Write metrics every N steps.", ge=1)
    sample_every: int = _f(10, "Write (prompt, completion, rewards) samples every N steps.", ge=1)
    save_every: int = _f(0, "Checkpoint every N steps (0 = only at the end).", ge=0)
    keep_last: int = _f(2, "Checkpoints kept: the newest N (0 = all), plus the best by keep_best_metric.")
    keep_best_metric: str | None = _f(None, "Also keep the best checkpoint by this eval metric.")
    keep_best_mode: str = _f("max", "Whether a larger or smaller keep_best_metric is better.", ("max", "min"))
    checkpoint_format: str = _f(
        "auto",
        "sharded: torch.distributed.checkpoint, each rank writes its shards; full: one state dict; auto = "
        "sharded under FSDP, else full. Either loads on any number of processes.",
        ("auto", "full", "sharded"),
    )
    eval_every: int = _f(
        0, "Evaluate on the held-out set every N GRPO steps (0 = before and after only).", ge=0
    )
    tensorboard: bool = _f(True, "Also write TensorBoard event files.")
    plot: bool = _f(True, "Write reward_curve.png at the end.")
    progress_bar: bool = _f(True, "Show a progress bar.")
    max_bad_steps: int = _f(
        3, "Updates in a row skipped for a non-finite loss or gradient norm before the run stops.", ge=0
    )


@dataclass
class EvalConfig:
    max_samples: int = _f(
        500, "Held-out records the trainer evaluates (first N); `mmrft eval` takes --limit.", ge=1
    )
    batch_size: int = _f(32, "Prompts per evaluation batch.", ge=1)
    temperature: float = _f(0.0, "Evaluation sampling temperature (0 = greedy).", ge=0)
    k: int = _f(1, "Completions per record (K > 1 samples at eval.temperature > 0 and reports pass@K).", ge=1)
    pass_threshold: float = _f(
        0.5,
        "A completion passes when its total reward >= this x the most its rewards can give (pass@K).",
        gt=0,
        le=1,
    )


@dataclass
class DistributedConfig:
    strategy: str = _f(
        "auto", "auto = fsdp under torchrun with >1 process, else none.", ("auto", "fsdp", "ddp", "none")
    )
    backend: str = _f("auto", "auto = nccl on CUDA, gloo on CPU.", ("auto", "nccl", "gloo"))
    timeout_s: float = _f(
        1800.0, "Timeout of every collective of the process group (init_process_group), in seconds.", gt=0
    )


@dataclass
class WatchdogConfig:
    generation_s: float = _f(
        1800.0, "Longest the rollout generation of one step may run (0 = no limit).", ge=0
    )
    reward_s: float = _f(
        1800.0, "Longest the scoring of one batch, all rewards together, may run (0 = no limit).", ge=0
    )
    update_s: float = _f(
        1800.0,
        "Longest the forwards, backwards and optimizer steps of one step may run (0 = no limit).",
        ge=0,
    )
    collective_s: float = _f(
        900.0,
        "Longest an explicit collective (reward gather, metric sums) may wait for other ranks (0 = no limit).",
        ge=0,
    )
    eval_s: float = _f(3600.0, "Longest one held-out evaluation may run (0 = no limit).", ge=0)
    grace_s: float = _f(
        10.0, "Seconds a stopped phase gets to unwind before the watchdog ends the process.", gt=0
    )


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Policy checkpoint."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Records and vision processing."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling."})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "GRPO loss."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "SFT warm-up stage."})
    rejection: RejectionConfig = field(
        default_factory=RejectionConfig,
        metadata={"help": "Rejection-sampling fine-tuning rounds (docs/rft.md)."},
    )
    rewards: list = field(
        default_factory=lambda: [RewardSpec("accuracy", 1.0, {})],
        metadata={"help": "Reward functions with weights and params.", "item": RewardSpec},
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation and logging."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Held-out evaluation."})
    distributed: DistributedConfig = field(default_factory=DistributedConfig, metadata={"help": "torchrun."})
    watchdog: WatchdogConfig = field(
        default_factory=WatchdogConfig, metadata={"help": "Time limits of each phase of a step."}
    )


class ConfigError(UserError, ValueError):
    """A config value that cannot be used; the message names the field."""

    label = "config error"


def _type_ok(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp in (list, dict, str, bool):
        return isinstance(value, tp)
    return True


def _range_text(bounds: dict[str, float]) -> str:
    """``{"gt": 0, "le": 1}`` -> ``in (0, 1]``; ``{"ge": 0}`` -> ``>= 0``."""

    def num(v: float) -> str:
        return str(v) if isinstance(v, int) else f"{v:g}"

    lo = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
    hi = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
    if lo and hi:
        return f"in {lo[0]}{num(lo[1])}, {num(hi[0])}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {num(lo[1])}"
    return f"{'<=' if hi[1] == ']' else '<'} {num(hi[0])}" if hi else ""


def _in_range(value: float, bounds: dict[str, float]) -> bool:
    return (
        ("ge" not in bounds or value >= bounds["ge"])
        and ("gt" not in bounds or value > bounds["gt"])
        and ("le" not in bounds or value <= bounds["le"])
        and ("lt" not in bounds or value < bounds["lt"])
    )


def _check_value(key: str, value: Any, tp: Any, md: Any) -> Any:
    """One leaf field: type (ints taken as floats, YAML 1.1's ``1e-3`` strings as numbers), finiteness,
    choices and range. Returns the value to store."""
    if isinstance(value, str) and _type_ok(1.0, tp) and not _type_ok(value, tp):
        try:  # YAML 1.1 reads `1e-3` (no dot) as a string; take it as the number it is
            value = float(value)
        except ValueError:
            pass
    if not _type_ok(value, tp):
        raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
    takes_float = tp is float or (
        typing.get_origin(tp) in (typing.Union, types.UnionType) and float in typing.get_args(tp)
    )
    if takes_float and isinstance(value, int):
        try:
            value = float(value)
        except OverflowError:
            raise ConfigError(f"{key}: {value} is too large for a float") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    choices = md.get("choices")
    if choices and value is not None and value not in choices:
        raise ConfigError(f"{key}: {value!r} is not allowed; choose from {', '.join(map(str, choices))}")
    bounds = md.get("range")
    if bounds and value is not None and not _in_range(value, bounds):
        raise ConfigError(f"{key}: must be {_range_text(bounds)}, got {value!r}")
    if isinstance(value, dict):
        bad = next((k for k in value if not isinstance(k, str)), None)
        if bad is not None or None in value:
            raise ConfigError(f"{key}: keys must be strings, got {bad!r}")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        where = f"{prefix}." if prefix else ""
        key = unknown[0]
        shown = key if isinstance(key, str) and key.isprintable() and key.strip() == key != "" else repr(key)
        raise ConfigError(f"unknown config field {where}{shown}; allowed: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        value, tp, key = data[name], hints[name], f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, key)
            continue
        item_cls = f.metadata.get("item")
        if item_cls is not None:
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
            kwargs[name] = [
                _build(item_cls, v if isinstance(v, dict) else {"name": v}, f"{key}[{i}]")
                for i, v in enumerate(value)
            ]
            continue
        kwargs[name] = _check_value(key, value, tp, f.metadata)
    return cls(**kwargs)


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key repeated in one mapping is an error (PyYAML keeps the
    last one silently)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # `<<: *base` merges; keys given beside it override those, as YAML intends
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        try:
            if key in seen:
                raise ConfigError(f"duplicate key {key!r} at line {line} (first given at line {seen[key]})")
            seen[key] = line
        except TypeError:
            continue  # an unhashable key: construct_mapping below reports it
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_load(text: str, where: str) -> Any:
    """Parse YAML with the strict loader; any problem is a ConfigError naming ``where`` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(e.problem or e.context or "invalid YAML").split())
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: invalid YAML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ConfigError(f"{where}: the YAML is nested too deeply") from None


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``grpo.beta=0.04`` -> ("grpo.beta", 0.04); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected key=value, e.g. grpo.beta=0.04")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r}: expected a dotted field name before '=', e.g. grpo.beta=0.04")
    return key, _yaml_load(raw, f"override {text!r}") if raw.strip() else ""


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (YAML) over the defaults, apply dotted overrides, validate, return a Config.

    Every problem (a missing file, invalid YAML, a repeated key, an unknown field, a wrong type, a value
    out of range) is a ``ConfigError`` whose one-line message names the field or line.
    """
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text") from None
        tree = _yaml_load(text, f"config file {str(p)!r}") or {}
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {str(p)!r}: expected a mapping at the top level")
    for ov in overrides or []:
        key, value = parse_override(ov)
        _set_dotted(tree, key, value)
    cfg = _build(Config, tree, "")
    validate(cfg)
    return cfg


def _validate_checkpoints(t: TrainConfig, sft_steps: int) -> None:
    if t.keep_last < 0:
        raise ConfigError(f"train.keep_last: must be >= 0 (0 keeps every checkpoint), got {t.keep_last}")
    if t.keep_best_metric is None:
        return
    if not t.keep_best_metric.startswith("eval"):
        raise ConfigError(
            f"train.keep_best_metric: {t.keep_best_metric!r} is not an eval metric; name one as metrics.jsonl "
            "logs it, e.g. eval_reward or eval/reward/<name>"
        )
    if t.save_every and t.eval_every and (t.eval_every % t.save_every or sft_steps % t.save_every):
        raise ConfigError(
            f"train.keep_best_metric needs a checkpoint at every evaluation: train.eval_every={t.eval_every} "
            f"and sft.steps={sft_steps} must be multiples of train.save_every={t.save_every}"
        )


def validate(cfg: Config) -> None:
    """Cross-field checks that a single field's type and range cannot express."""
    _validate_checkpoints(cfg.train, cfg.sft.steps)
    G = cfg.rollout.group_size
    if cfg.train.micro_batch_size % G:
        raise ConfigError(
            f"train.micro_batch_size={cfg.train.micro_batch_size} must be a multiple of rollout.group_size={G} "
            "(micro-batches hold whole groups so each image is encoded once)"
        )
    if cfg.model.path is None and cfg.model.tiny is None:
        raise ConfigError("model.path: give a local checkpoint directory, or set model.tiny to tiny|small")
    d = cfg.data
    if d.synthetic.min_duration > d.synthetic.max_duration:
        raise ConfigError(
            f"data.synthetic.min_duration={d.synthetic.min_duration} must be <= "
            f"data.synthetic.max_duration={d.synthetic.max_duration}"
        )
    if not 2 <= d.video_min_frames <= d.video_max_frames:
        raise ConfigError(
            f"data.video_min_frames={d.video_min_frames} and data.video_max_frames={d.video_max_frames}: "
            "need 2 <= video_min_frames <= video_max_frames"
        )
    if not 0 < d.min_pixels <= d.max_pixels:
        raise ConfigError(f"data.min_pixels={d.min_pixels} must be > 0 and <= data.max_pixels={d.max_pixels}")
    betas = cfg.train.adam_betas
    if not (len(betas) == 2 and all(_type_ok(b, float) and math.isfinite(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"train.adam_betas: expected two numbers in [0, 1), got {betas!r}")
    if not all(isinstance(m, str) and m for m in cfg.model.lora_target_modules):
        raise ConfigError(
            f"model.lora_target_modules: expected a list of module names, got {cfg.model.lora_target_modules!r}"
        )
    rj = cfg.rejection
    if rj.rounds and rj.max_samples < rj.k:
        raise ConfigError(f"rejection.max_samples={rj.max_samples} must be >= rejection.k={rj.k}")
    if not cfg.rewards:
        raise ConfigError("rewards: at least one reward is needed")
    if cfg.rollout.engine == "vllm":
        from mmrft.vllm_engine import INSTALL_HINT, vllm_installed

        if not vllm_installed():
            raise ConfigError(f"rollout.engine=vllm: {INSTALL_HINT}")
    _check_rewards(cfg.rewards)


def _check_rewards(specs: list) -> None:
    """Every reward resolves and its params are ones it declares, with values it accepts."""
    from rewards.registry import validate_reward

    for i, spec in enumerate(specs):
        try:
            validate_reward(spec.name, spec.params, f"rewards[{i}]")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted name, default, allowed values and help (for `mmrft train --help-config`)."""
    lines = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        tp = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            lines += describe(tp, key + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(map(str, choices))}]" if choices else ""
        if f.metadata.get("range"):
            extra += f" ({_range_text(f.metadata['range'])})"
        lines.append(f"{key} = {to_dict(default)!r}{extra}  # {f.metadata.get('help', '')}")
        if f.metadata.get("item") is not None:
            lines += describe(f.metadata["item"], f"{key}[i].")
    return lines
