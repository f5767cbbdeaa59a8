"""A run directory as the trainer writes it (``mmrft/tracking.py``), read defensively while it trains.

- ``samples.jsonl``: one line per logged completion, ``{"step", "id", "prompt", "completion",
  "solution", "reward", "rewards", "advantage"}``; the G completions of a prompt are consecutive.
- ``metrics.jsonl``: one line per logged step, ``{"step", "stage", <metric>: value, ...}``.

Values may be numbers, ``null``, strings such as ``"nan"`` or ``"inf"`` (non-finite metrics), or absent;
a line may be cut short (the trainer is writing it) or not JSON. Every value goes through
:func:`number`; a bad line is counted, never fatal. A resumed run may log a step again: the last block
of lines of a step wins.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def number(value: Any) -> float | None:
    """A finite float from a logged value (number or numeric string), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def read_rows(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects of a JSONL file and how many lines were not one (a half-written last line too)."""
    rows: list[dict[str, Any]] = []
    bad = 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


class RunError(ValueError):
    """A run directory that cannot be shown, in one line for the page."""


def _file(run_dir: str | Path | None, name: str) -> Path:
    if run_dir is None or not str(run_dir).strip():
        raise RunError("no run directory: give the folder a training run writes (train.output_dir)")
    d = Path(str(run_dir).strip()).expanduser()
    if not d.is_dir():
        raise RunError(f"run directory not found: {d}")
    p = d / name
    if not p.is_file():
        raise RunError(f"{d} has no {name} yet (the trainer writes it from its first logged step)")
    return p


@dataclass
class Completion:
    """One logged completion: its place in the group, text, total reward, per-reward scores, advantage."""

    index: int
    text: str
    reward: float | None
    rewards: dict[str, float | None]
    advantage: float | None


@dataclass
class PromptGroup:
    """The G completions of one prompt at one step (solution in the model's frame, as logged)."""

    step: int
    id: str
    prompt: str
    solution: dict[str, Any]
    completions: list[Completion] = field(default_factory=list)


@dataclass
class RolloutLog:
    """Every logged step's prompt groups, steps ascending; ``bad_lines`` counts lines that were skipped."""

    groups: dict[int, list[PromptGroup]]
    bad_lines: int = 0

    @property
    def steps(self) -> list[int]:
        return sorted(self.groups)


def load_rollouts(run_dir: str | Path | None) -> RolloutLog:
    """``samples.jsonl`` grouped by step and prompt; RunError when there is nothing to show."""
    path = _file(run_dir, "samples.jsonl")
    rows, bad = read_rows(path)
    blocks: dict[int, list[PromptGroup]] = {}
    current: list[PromptGroup] = []
    prev_step: int | None = None
    for row in rows:
        step = number(row.get("step"))
        if step is None or not isinstance(row.get("completion"), str):
            bad += 1
            continue
        step = int(step)
        if step != prev_step:  # a new block of lines: a later block of the same step replaces it
            current = blocks[step] = []
            prev_step = step
        rid = str(row.get("id", "?"))
        prompt = str(row.get("prompt", ""))
        if not current or current[-1].id != rid or current[-1].prompt != prompt:
            sol = row.get("solution") if isinstance(row.get("solution"), dict) else {}
            current.append(PromptGroup(step, rid, prompt, sol))
        group = current[-1]
        scores = row.get("rewards") if isinstance(row.get("rewards"), dict) else {}
        group.completions.append(
            Completion(len(group.completions), row["completion"], number(row.get("reward")),
                       {str(k): number(v) for k, v in scores.items()}, number(row.get("advantage")))
        )  # fmt: skip
    if not blocks:
        raise RunError(f"{path} holds no completions yet ({bad} unreadable line(s))")
    return RolloutLog(blocks, bad)


def filter_groups(
    groups: list[PromptGroup], min_reward: float | None, max_reward: float | None
) -> list[PromptGroup]:
    """The groups with only their completions whose reward lies in [min_reward, max_reward] (a bound of
    None is open; a completion with no reward is kept only when both bounds are open)."""
    out = []
    for g in groups:
        keep = [
            c for c in g.completions
            if (min_reward is None and max_reward is None)
            or (c.reward is not None and (min_reward is None or c.reward >= min_reward)
                and (max_reward is None or c.reward <= max_reward))
        ]  # fmt: skip
        if keep:
            out.append(PromptGroup(g.step, g.id, g.prompt, g.solution, keep))
    return out


@dataclass
class Curves:
    """metrics.jsonl as series: {(stage, metric): [(step, value), ...]} with steps ascending."""

    series: dict[tuple[str, str], list[tuple[int, float]]]
    rows: int
    bad_lines: int = 0

    def get(self, stage: str, metric: str) -> list[tuple[int, float]]:
        return self.series.get((stage, metric), [])

    def metrics(self, prefix: str = "") -> list[tuple[str, str]]:
        return sorted(k for k in self.series if k[1].startswith(prefix))

    def latest(self) -> dict[str, float]:
        """The last logged value of every series, named ``stage/metric``."""
        return {f"{s}/{m}": pts[-1][1] for (s, m), pts in sorted(self.series.items()) if pts}


def load_curves(run_dir: str | Path | None) -> Curves:
    """``metrics.jsonl`` as :class:`Curves` (the last value logged for a step wins)."""
    path = _file(run_dir, "metrics.jsonl")
    rows, bad = read_rows(path)
    points: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
    for row in rows:
        step = number(row.get("step"))
        if step is None:
            bad += 1
            continue
        stage = str(row.get("stage") or "train")
        for key, value in row.items():
            v = number(value)
            if key in ("step", "stage") or v is None:
                continue
            points[(stage, key)][int(step)] = v
    series = {k: sorted(d.items()) for k, d in points.items()}
    if not series:
        raise RunError(f"{path} holds no metrics yet ({bad} unreadable line(s))")
    return Curves(series, len(rows), bad)
