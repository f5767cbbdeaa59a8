"""Run configuration: nested dataclasses, one per component, each field with its one-line help.

``load_config(path, overrides)`` reads a YAML file (or the defaults when ``path`` is None) and applies
dotted ``key=value`` overrides (``grpo.beta=0.04``). Unknown keys, wrong types and values outside a
field's choices fail at load with one line naming the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def _f(default: Any, help: str, choices: tuple | None = None, **kw) -> Any:
    md = {"help": help}
    if choices:
        md["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=md, **kw)
    return field(default=default, metadata=md, **kw)


@dataclass
class ModelConfig:
    path: str | None = _f(None, "Local Qwen2.5-VL / Qwen2-VL checkpoint directory (offline).")
    tiny: str | None = _f(
        None, "Build a tiny Qwen2.5-VL of this preset at run start instead of `path`.", ("tiny", "small")
    )
    tiny_seed: int = _f(0, "Seed of the tiny model's weights and tokenizer.")
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
    lora_r: int = _f(0, "LoRA rank on the language model's linear layers; 0 trains all weights.")
    lora_alpha: int = _f(32, "LoRA alpha.")
    lora_dropout: float = _f(0.05, "LoRA dropout.")
    lora_target_modules: list = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "Module names LoRA wraps.")


@dataclass
class SyntheticConfig:
    task: str = _f("classification", "Built-in synthetic task.", ("classification", "counting", "grounding"))
    n_train: int = _f(4000, "Training records to generate.")
    n_eval: int = _f(500, "Held-out records to generate (different seed).")
    sft_examples: int = _f(64, "Labelled records for the SFT warm-up (taken from the training split).")
    seed: int = _f(0, "Generator seed (the held-out split uses seed + 1).")
    image_size: int = _f(112, "Side of the square synthetic images, in pixels.")
    prompt_style: str = _f(
        "answer_only",
        "Answer format the prompts ask for (plain: the bare answer, no tags).",
        ("answer_only", "think_answer", "plain"),
    )
    question: str = _f("shape", "What classification asks for: the shape, or its colour.", ("shape", "color"))


@dataclass
class DataConfig:
    train_file: str | None = _f(None, "Training JSONL; None uses the built-in synthetic task.")
    eval_file: str | None = _f(None, "Held-out JSONL for evaluation; None uses the synthetic held-out split.")
    sft_file: str | None = _f(
        None, "JSONL for the SFT stage; None uses `train_file` (or the synthetic split)."
    )
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig, metadata={"help": "Built-in task."})
    min_pixels: int = _f(4 * 28 * 28, "Smallest image area after smart-resize.")
    max_pixels: int = _f(1280 * 28 * 28, "Largest image area after smart-resize.")
    video_fps: float = _f(2.0, "Frames per second sampled from videos.")
    video_min_frames: int = _f(4, "Fewest frames sampled from one video.")
    video_max_frames: int = _f(32, "Most frames sampled from one video.")
    video_min_pixels: int = _f(128 * 28 * 28, "Smallest frame area after resize (qwen-vl-utils: 128 tokens).")
    video_max_pixels: int = _f(768 * 28 * 28, "Largest frame area after resize (qwen-vl-utils: 768 tokens).")
    video_total_pixels: int = _f(3584 * 28 * 28, "Pixel budget of all sampled frames of a video together.")
    on_bad_record: str = _f(
        "error", "error: stop naming the record; skip: skip and count.", ("error", "skip")
    )
    shuffle: bool = _f(True, "Shuffle the training records each epoch (seeded).")


@dataclass
class RolloutConfig:
    group_size: int = _f(8, "G: completions sampled per prompt.")
    max_prompt_length: int = _f(1024, "Longest prompt in tokens, vision tokens included (never truncated).")
    max_completion_length: int = _f(64, "Most tokens generated per completion.")
    temperature: float = _f(1.0, "Sampling temperature for rollouts.")
    top_p: float = _f(1.0, "Nucleus sampling mass for rollouts.")
    top_k: int = _f(0, "Top-k for rollouts; 0 = off.")


@dataclass
class GRPOConfig:
    steps: int = _f(100, "GRPO optimiser steps (one rollout batch each, times num_iterations).")
    beta: float = _f(0.0, "KL coefficient to the frozen reference (k3); 0 loads no reference model.")
    epsilon_low: float = _f(0.2, "Lower ratio clip: ratios below 1 - epsilon_low are clipped.")
    epsilon_high: float = _f(0.2, "Upper ratio clip (DAPO clip-higher uses 0.28).")
    scale_rewards: str = _f("group", "Advantage scaling by std.", ("group", "batch", "none"))
    loss_aggregation: str = _f(
        "token_mean",
        "How per-token losses are averaged.",
        ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"),
    )
    importance_level: str = _f(
        "token", "token (GRPO) or sequence (GSPO) importance ratios.", ("token", "sequence")
    )
    num_iterations: int = _f(1, "mu: policy updates per rollout batch (old log-probs stored when > 1).")
    drop_zero_variance_groups: bool = _f(False, "Drop groups whose rewards are all equal (dynamic sampling).")


@dataclass
class RewardSpec:
    name: str = _f("accuracy", "Registry name, 'pkg.module:fn' or 'path/file.py:fn'.")
    weight: float = _f(1.0, "Weight in the summed reward.")
    params: dict = _f({}, "Keyword parameters passed to the reward function.")


@dataclass
class SFTConfig:
    steps: int = _f(0, "SFT steps before GRPO (0 = no SFT stage).")
    lr: float = _f(1e-3, "SFT learning rate.")
    batch_size: int = _f(16, "Records per SFT step (global).")


@dataclass
class TrainConfig:
    output_dir: str = _f("runs/quickstart", "Run directory: metrics, samples, checkpoints, summary.")
    seed: int = _f(0, "Seed for weights init (tiny), data order and sampling.")
    device: str = _f("auto", "auto = cuda when available, else cpu.", ("auto", "cpu", "cuda"))
    prompts_per_step: int = _f(16, "B: prompts per GRPO step, over all processes.")
    micro_batch_size: int = _f(64, "Sequences per forward/backward (a multiple of group_size).")
    lr: float = _f(1e-5, "Peak learning rate (AdamW).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    adam_betas: list = _f([0.9, 0.99], "AdamW betas.")
    warmup_steps: int = _f(0, "Linear warmup steps before cosine decay.")
    min_lr_ratio: float = _f(0.1, "Cosine decays to lr * min_lr_ratio.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm; 0 = off.")
    log_every: int = _f(1, "Write metrics every N steps.")
    sample_every: int = _f(10, "Write (prompt, completion, rewards) samples every N steps.")
    save_every: int = _f(0, "Checkpoint every N steps (0 = only at the end).")
    keep_last: int = _f(2, "Checkpoints kept: the newest N (0 = all), plus the best by keep_best_metric.")
    keep_best_metric: str | None = _f(None, "Also keep the best checkpoint by this eval metric.")
    keep_best_mode: str = _f("max", "Whether a larger or smaller keep_best_metric is better.", ("max", "min"))
    checkpoint_format: str = _f(
        "auto",
        "sharded: torch.distributed.checkpoint, each rank writes its shards; full: one state dict; auto = "
        "sharded under FSDP, else full. Either loads on any number of processes.",
        ("auto", "full", "sharded"),
    )
    eval_every: int = _f(0, "Evaluate on the held-out set every N GRPO steps (0 = before and after only).")
    tensorboard: bool = _f(True, "Also write TensorBoard event files.")
    plot: bool = _f(True, "Write reward_curve.png at the end.")
    progress_bar: bool = _f(True, "Show a progress bar.")


@dataclass
class EvalConfig:
    max_samples: int = _f(
        500, "Held-out records the trainer evaluates (first N); `mmrft eval` takes --limit."
    )
    batch_size: int = _f(32, "Prompts per evaluation batch.")
    temperature: float = _f(0.0, "Evaluation sampling temperature (0 = greedy).")
    k: int = _f(1, "Completions per record (K > 1 samples at eval.temperature > 0 and reports pass@K).")
    pass_threshold: float = _f(
        0.5, "A completion passes when its total reward >= this x the most its rewards can give (pass@K)."
    )


@dataclass
class DistributedConfig:
    strategy: str = _f(
        "auto", "auto = fsdp under torchrun with >1 process, else none.", ("auto", "fsdp", "ddp", "none")
    )
    backend: str = _f("auto", "auto = nccl on CUDA, gloo on CPU.", ("auto", "nccl", "gloo"))


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "Policy checkpoint."})
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "Records and vision processing."})
    rollout: RolloutConfig = field(default_factory=RolloutConfig, metadata={"help": "Sampling."})
    grpo: GRPOConfig = field(default_factory=GRPOConfig, metadata={"help": "GRPO loss."})
    sft: SFTConfig = field(default_factory=SFTConfig, metadata={"help": "SFT warm-up stage."})
    rewards: list = field(
        default_factory=lambda: [RewardSpec("accuracy", 1.0, {})],
        metadata={"help": "Reward functions with weights and params.", "item": RewardSpec},
    )
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "Optimisation and logging."})
    eval: EvalConfig = field(default_factory=EvalConfig, metadata={"help": "Held-out evaluation."})
    distributed: DistributedConfig = field(default_factory=DistributedConfig, metadata={"help": "torchrun."})


class ConfigError(ValueError):
    """A config value that cannot be used; the message names the field."""


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


def _build(cls: type, data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config field {where}{unknown[0]}; allowed: {', '.join(fields)}")
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
        if isinstance(value, str) and _type_ok(1.0, tp) and not _type_ok(value, tp):
            try:  # YAML 1.1 reads `1e-3` (no dot) as a string; take it as the number it is
                value = float(value)
            except ValueError:
                pass
        if not _type_ok(value, tp):
            raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")
        if tp is float or (
            typing.get_origin(tp) in (typing.Union, types.UnionType)
            and isinstance(value, int)
            and float in typing.get_args(tp)
        ):
            value = float(value) if value is not None else None
        choices = f.metadata.get("choices")
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose from {', '.join(map(str, choices))}")
        kwargs[name] = value
    return cls(**kwargs)


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
    return key.strip(), yaml.safe_load(raw) if raw.strip() else ""


def to_dict(cfg: Any) -> Any:
    """The config as plain YAML-able data."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, list):
        return [to_dict(v) for v in cfg]
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read ``path`` (YAML) over the defaults, apply dotted overrides, validate, return a Config."""
    tree: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        tree = yaml.safe_load(p.read_text()) or {}
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
    """Cross-field checks that a single field's type cannot express."""
    _validate_checkpoints(cfg.train, cfg.sft.steps)
    G = cfg.rollout.group_size
    if G < 2:
        raise ConfigError(f"rollout.group_size: must be >= 2 for group advantages, got {G}")
    if cfg.train.micro_batch_size % G:
        raise ConfigError(
            f"train.micro_batch_size={cfg.train.micro_batch_size} must be a multiple of rollout.group_size={G} "
            "(micro-batches hold whole groups so each image is encoded once)"
        )
    if cfg.model.path is None and cfg.model.tiny is None:
        raise ConfigError("model.path: give a local checkpoint directory, or set model.tiny to tiny|small")
    if cfg.grpo.num_iterations < 1:
        raise ConfigError(f"grpo.num_iterations: must be >= 1, got {cfg.grpo.num_iterations}")
    if cfg.grpo.loss_aggregation == "seq_mean_token_sum_norm" and cfg.rollout.max_completion_length < 1:
        raise ConfigError("rollout.max_completion_length must be >= 1 for seq_mean_token_sum_norm")
    d = cfg.data
    if not 2 <= d.video_min_frames <= d.video_max_frames:
        raise ConfigError(
            f"data.video_min_frames={d.video_min_frames} and data.video_max_frames={d.video_max_frames}: "
            "need 2 <= video_min_frames <= video_max_frames"
        )
    if not 0 < d.min_pixels <= d.max_pixels:
        raise ConfigError(f"data.min_pixels={d.min_pixels} must be > 0 and <= data.max_pixels={d.max_pixels}")
    if not cfg.rewards:
        raise ConfigError("rewards: at least one reward is needed")
    _check_rewards(cfg.rewards)
    for k in ("prompts_per_step",):
        if getattr(cfg.train, k) < 1:
            raise ConfigError(f"train.{k}: must be >= 1")


def _check_rewards(specs: list) -> None:
    """Every reward resolves and its params are ones it declares, with values it accepts."""
    from rewards.registry import validate_reward

    for i, spec in enumerate(specs):
        try:
            validate_reward(spec.name, spec.params, f"rewards[{i}]")
        except ValueError as e:
            raise ConfigError(str(e)) from None


def describe(cls: type = Config, prefix: str = "") -> list[str]:
    """One line per field: dotted name, default and help (for `mmrft train --help-config`)."""
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
        lines.append(f"{key} = {to_dict(default)!r}{extra}  # {f.metadata.get('help', '')}")
    return lines
