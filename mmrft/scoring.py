"""Score completions with the configured rewards: each fn(completions, **columns) -> scores; weighted sum.

A reward may return ``None`` for a completion it does not apply to; the weighted sum skips it (the
completion's total is over the rewards that apply). Anything else must be a finite number within
float32's range: NaN, +-inf, a value like 1e300, a weighted sum that overflows, or a non-number is a
``RewardError`` naming the reward and the record (never read as "not applicable"). Each call is bounded
by its spec's ``timeout_s`` (through the active watchdog; ``RewardTimeout`` names the reward). Metrics a
reward attaches (``Scores.metrics``) are returned under ``reward/<name>/<metric>``; each reward's mean
under ``reward/<name>`` (left out when it applies to no completion).
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch

import rewards as reward_registry
from data_pipelines.sample import Sample
from mmrft.errors import RewardError, RewardTimeout
from mmrft.watchdog import time_limit

FLOAT32_MAX = float(torch.finfo(torch.float32).max)


@dataclass
class ScoredRollout:
    """Per-completion totals [N] and per-reward scores [K, N] (NaN where not applicable)."""

    total: torch.Tensor
    per_reward: torch.Tensor
    names: list[str]
    metrics: dict[str, float]


class RewardStack:
    """The config's rewards, resolved once; calling it scores a batch of completions."""

    def __init__(self, specs: list, device: torch.device | None = None):
        self.names: list[str] = []
        self.fns: list = []
        self.weights: list[float] = []
        self.timeouts: list[float] = []
        for i, spec in enumerate(specs):
            try:
                fn = reward_registry.get(spec.name)
            except ValueError as e:
                raise RewardError(f"rewards[{i}].name: {e}") from None
            try:
                params = reward_registry.validate_params(fn, spec.params, f"rewards[{i}].params")
            except ValueError as e:
                raise RewardError(str(e)) from None
            if device is not None and "device" in inspect.signature(fn).parameters and "device" not in params:
                params["device"] = str(device)
            self.fns.append(functools.partial(fn, **params) if params else fn)
            base = spec.name.rsplit(":", 1)[-1]
            name, k = base, 2
            while name in self.names:
                name, k = f"{base}_{k}", k + 1
            self.names.append(name)
            self.weights.append(float(spec.weight))
            self.timeouts.append(float(getattr(spec, "timeout_s", 0.0)))

    def __call__(self, texts: list[str], samples: list[Sample]) -> ScoredRollout:
        """Score ``texts[i]`` against ``samples[i]`` (one sample per completion)."""
        n = len(texts)
        columns = columns_for(samples)
        per = torch.full((len(self.fns), n), float("nan"), dtype=torch.float64)
        metrics: dict[str, float] = {}
        for k, (name, fn) in enumerate(zip(self.names, self.fns)):
            with time_limit(f"reward {name!r}", self.timeouts[k], f"rewards[{k}].timeout_s", RewardTimeout):
                scores = fn(completions=texts, **columns)
            if scores is None or not hasattr(scores, "__len__") or len(scores) != n:
                got = f"{len(scores)} scores" if hasattr(scores, "__len__") else repr(type(scores).__name__)
                raise RewardError(
                    f"reward {name!r} returned {got} for {n} completions; expected one per completion"
                )
            per[k] = torch.tensor(
                [_checked(name, s, j, columns["id"]) for j, s in enumerate(scores)], dtype=torch.float64
            )
            valid = per[k][~per[k].isnan()]
            if valid.numel():
                metrics[f"reward/{name}"] = float(valid.mean())
            for m, v in getattr(scores, "metrics", {}).items():
                metrics[f"reward/{name}/{m}"] = float(v)
        w = torch.tensor(self.weights, dtype=torch.float64)[:, None]
        applies = ~per.isnan()
        total = torch.where(applies, per * w, torch.zeros_like(per)).sum(0)  # [N], float64
        bad = (total.abs() > FLOAT32_MAX).nonzero()
        if bad.numel():
            j = int(bad[0])
            parts = ", ".join(
                f"{nm}={float(per[k, j]):g} x {self.weights[k]:g}" for k, nm in enumerate(self.names)
            )
            raise RewardError(
                f"the weighted reward of record {columns['id'][j]!r} (completion {j}) overflows float32: {parts}; "
                "rewards and weights must keep the sum within +-3.4e38"
            )
        total = torch.where(applies.any(0), total, torch.full_like(total, float("nan")))
        return ScoredRollout(total.float(), per.float(), list(self.names), metrics)


def _checked(name: str, score: Any, j: int, ids: list) -> float:
    """One score as a float: None -> NaN (not applicable); a finite number within float32 -> itself;
    anything else is a RewardError naming the reward, the record and the completion."""
    if score is None:
        return float("nan")
    try:
        value = float(score)
    except (TypeError, ValueError, OverflowError):
        raise RewardError(
            f"reward {name!r} returned {repr(score)[:80]} for record {ids[j]!r} (completion {j}); "
            "expected a float, or None for not applicable"
        ) from None
    if not math.isfinite(value) or abs(value) > FLOAT32_MAX:
        raise RewardError(
            f"reward {name!r} returned {value!r} for record {ids[j]!r} (completion {j}); rewards must be "
            "finite floats within float32's range (None = not applicable)"
        )
    return value


def columns_for(samples: list[Sample]) -> dict[str, list[Any]]:
    """The reward columns of a batch: solution, task, coord_space, image_size, id, prompts, extras."""
    cols: dict[str, list[Any]] = {
        "prompts": [s.prompt for s in samples],
        "solution": [s.solution for s in samples],
        "task": [s.task for s in samples],
        "coord_space": [s.coord_space for s in samples],
        "image_size": [_frame_size(s) for s in samples],
        "id": [s.id for s in samples],
    }
    extra_keys = sorted({k for s in samples for k in s.columns} - set(cols))
    for k in extra_keys:
        cols[k] = [s.columns.get(k) for s in samples]
    return cols


def _frame_size(sample: Sample) -> tuple[int, int] | None:
    """(width, height) of what the model saw: the first image, else the video's frames."""
    if sample.images:
        return sample.images[0].size
    if sample.video is not None and sample.video.frames.ndim == 4:
        return int(sample.video.frames.shape[2]), int(sample.video.frames.shape[1])
    return None
