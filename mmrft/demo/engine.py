"""The demo's models and what it asks of them, through the code training and ``mmrft eval`` use.

Loading is :func:`mmrft.models.loading.load_model`; prompts and sampling are
:func:`mmrft.rollout.encode_prompts` / :func:`mmrft.rollout.generate` with the evaluation's
:class:`~mmrft.evaluation.Decoding`; answers are read by :func:`mmrft.evaluation.parse_prediction` and
scored by :class:`mmrft.scoring.RewardStack`; chart code renders in the chart reward's sandbox pool.
"""

from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from data_pipelines.sample import Sample
from data_pipelines.vision import VisionSpec
from mmrft.config import RewardSpec
from mmrft.evaluation import Decoding
from mmrft.evaluation.runner import task_rewards
from mmrft.rollout import encode_prompts, generate

MAX_SAMPLES = 16
MAX_NEW_TOKENS = 2048


@dataclass
class DemoSettings:
    """What the demo shares with a training run: how inputs are sized, the prompt budget, the rewards.

    source: where they came from (a config file, or the defaults), shown at start.
    """

    vision: VisionSpec = field(default_factory=VisionSpec)
    max_prompt_length: int = 1024
    rewards: list[RewardSpec] = field(default_factory=list)
    max_megapixels: float = 40.0
    source: str = "defaults"

    @classmethod
    def from_config(cls, cfg, source: str, max_megapixels: float = 40.0) -> DemoSettings:
        from mmrft.data import vision_spec

        return cls(vision_spec(cfg), cfg.rollout.max_prompt_length, list(cfg.rewards), max_megapixels, source)


@dataclass
class DemoModel:
    """One loaded checkpoint, ready to answer (eval mode, no gradients); ``lock`` serialises requests."""

    name: str
    path: Path
    ops: torch.nn.Module
    processor: object
    model_type: str
    device: torch.device
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def coord_space(self) -> str:
        """The frame its boxes are in: Qwen2-VL answers in 0-1000, Qwen2.5-VL in resized pixels."""
        return "norm1000" if self.model_type == "qwen2_vl" else "pixel"


def pick_device(requested: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available; use auto or cpu")
    return torch.device(requested)


def load_demo_model(path: str | Path, name: str, device: torch.device, settings: DemoSettings) -> DemoModel:
    """The checkpoint at ``path`` loaded by the trainer's loader, wrapped for the vision-once forwards."""
    from mmrft.models.forward import VLMOps
    from mmrft.models.loading import load_model

    loaded = load_model(
        path, device=device, min_pixels=settings.vision.min_pixels, max_pixels=settings.vision.max_pixels
    )
    loaded.policy.eval()
    loaded.policy.requires_grad_(False)
    ops = VLMOps(loaded.policy, loaded.compute_dtype)
    return DemoModel(name, Path(path), ops, loaded.processor, loaded.model_type, device)


def decoding(greedy: bool, temperature: float, max_new_tokens: int, n_samples: int, seed: int) -> Decoding:
    """The sampling controls, checked; raises ValueError with the control's name (an empty control
    counts as 0, the seed's as seed 0)."""
    n, new, temperature, seed = int(n_samples or 0), int(max_new_tokens or 0), temperature or 0.0, seed or 0
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"number of samples must be 1..{MAX_SAMPLES}, got {n}")
    if not 1 <= new <= MAX_NEW_TOKENS:
        raise ValueError(f"max new tokens must be 1..{MAX_NEW_TOKENS}, got {new}")
    if not greedy and not float(temperature) > 0:
        raise ValueError(f"temperature must be > 0 to sample (or tick greedy), got {temperature}")
    if greedy and n > 1:
        raise ValueError(f"greedy decoding gives {n} identical answers: untick greedy to sample {n}")
    return Decoding(
        k=n, temperature=0.0 if greedy else float(temperature), max_new_tokens=new, seed=int(seed)
    )


@dataclass
class Generation:
    """K completions of one prompt: texts, token counts, whether each hit max_new_tokens, wall seconds."""

    texts: list[str]
    tokens: list[int]
    truncated: list[bool]
    seconds: float


@torch.no_grad()
def answer(model: DemoModel, sample: Sample, dec: Decoding, max_prompt_length: int) -> Generation:
    """``dec.k`` completions of ``sample`` (seeded by ``dec.seed``); ValueError for a prompt too long."""
    with model.lock:
        t0 = time.perf_counter()
        pb = encode_prompts(model.ops, model.processor, [sample], max_prompt_length, model.device)
        ro = generate(model.ops, model.processor, pb, dec.k, dec.params(), [dec.seed])
        seconds = time.perf_counter() - t0
    tokens = [int(n) for n in ro.completion_mask.sum(1).tolist()]
    return Generation(list(ro.texts), tokens, [bool(x) for x in ro.truncated.tolist()], seconds)


def reward_specs(task: str, prompt_style: str, configured: list[RewardSpec]) -> list[RewardSpec]:
    """The rewards that score a Try answer: the configured ones, plus the task's own reward and, for a
    tagged prompt style, ``format`` with that structure, when the config has none of that name."""
    specs = list(configured)
    names = {s.name.rsplit(":", 1)[-1] for s in specs}
    specs += [RewardSpec(own) for own in task_rewards(task) if own not in names]
    if prompt_style in ("answer_only", "think_answer") and "format" not in names:
        specs.append(RewardSpec("format", 1.0, {"structure": prompt_style}))
    return specs


@dataclass
class Scores:
    """Per completion: {reward name: score, None where it does not apply} and the weighted total."""

    per_reward: list[dict[str, float | None]]
    total: list[float | None]


def score(texts: list[str], sample: Sample, specs: list[RewardSpec]) -> Scores:
    """Every completion of ``sample`` scored by ``specs`` (the trainer's RewardStack)."""
    import math

    from mmrft.scoring import RewardStack

    stack = RewardStack(specs, None)
    scored = stack(texts, [sample] * len(texts))
    rows = [
        {
            name: (None if math.isnan(v) else float(v))
            for name, v in zip(stack.names, scored.per_reward[:, n].tolist())
        }
        for n in range(len(texts))
    ]
    total = [None if math.isnan(float(t)) else float(t) for t in scored.total.tolist()]
    return Scores(rows, total)


def render_chart(code: str, params: dict | None = None) -> tuple[Image.Image | None, str]:
    """Run chart code in the chart reward's sandbox pool: (the rendered figure, "") or (None, why not)."""
    from rewards.chart.reward import get_pool, sandbox_config

    result = get_pool(sandbox_config(params or {})).run(code)
    if not result.ok:
        return None, f"{result.reason}: {result.detail}".rstrip(": ")
    return Image.open(io.BytesIO(result.png)).convert("RGB"), ""
