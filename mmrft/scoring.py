"""Score completions with the configured rewards: each fn(completions, **columns) -> scores; weighted sum.

A reward may return ``None`` for a completion it does not apply to; the weighted sum skips it (the
completion's total is over the rewards that apply). Metrics a reward attaches (``Scores.metrics``) are
returned under ``reward/<name>/<metric>``; each reward's mean under ``reward/<name>``.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any

import torch

import rewards as reward_registry
from data_pipelines.sample import Sample


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
        for i, spec in enumerate(specs):
            try:
                fn = reward_registry.get(spec.name)
            except ValueError as e:
                raise ValueError(f"rewards[{i}].name: {e}") from None
            params = reward_registry.validate_params(fn, spec.params, f"rewards[{i}].params")
            if device is not None and "device" in inspect.signature(fn).parameters and "device" not in params:
                params["device"] = str(device)
            self.fns.append(functools.partial(fn, **params) if params else fn)
            base = spec.name.rsplit(":", 1)[-1]
            name, k = base, 2
            while name in self.names:
                name, k = f"{base}_{k}", k + 1
            self.names.append(name)
            self.weights.append(float(spec.weight))

    def __call__(self, texts: list[str], samples: list[Sample]) -> ScoredRollout:
        """Score ``texts[i]`` against ``samples[i]`` (one sample per completion)."""
        n = len(texts)
        columns = columns_for(samples)
        per = torch.full((len(self.fns), n), float("nan"))
        metrics: dict[str, float] = {}
        for k, (name, fn) in enumerate(zip(self.names, self.fns)):
            scores = fn(completions=texts, **columns)
            if len(scores) != n:
                raise ValueError(f"reward {name!r} returned {len(scores)} scores for {n} completions")
            vals = [float("nan") if s is None else float(s) for s in scores]
            per[k] = torch.tensor(vals)
            valid = per[k][~per[k].isnan()]
            metrics[f"reward/{name}"] = float(valid.mean()) if valid.numel() else float("nan")
            for m, v in getattr(scores, "metrics", {}).items():
                metrics[f"reward/{name}/{m}"] = float(v)
        w = torch.tensor(self.weights)[:, None]
        applies = ~per.isnan()
        total = torch.where(applies, per * w, torch.zeros_like(per)).sum(0)
        total = torch.where(applies.any(0), total, torch.full_like(total, float("nan")))
        return ScoredRollout(total, per, list(self.names), metrics)


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
