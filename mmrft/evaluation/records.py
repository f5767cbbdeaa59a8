"""Per-record results: completions parsed (:func:`parse_prediction`) and scored by the config's rewards.

A :class:`RecordResult` is what evaluation keeps of one record; the metrics are computed from a list
of them (gathered from every rank first). Records that could not be scored are results too, with a
``status`` saying why, so that they are counted (as wrong) and reported, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from data_pipelines.sample import Sample
from mmrft.evaluation.answers import ParseOptions, Prediction, parse_prediction
from mmrft.evaluation.metrics import completion_values, eval_family
from mmrft.scoring import RewardStack

STATUSES = ("ok", "load_failed", "generate_failed", "missing_prediction")
CHART_REWARD = "chart_render"


@dataclass
class RecordResult:
    """One record's completions, parsed answers and scores.

    index: the record's position in the dataset. status: one of ``STATUSES`` (anything but ``ok`` has
    no completions and counts as wrong). solution: ground truth in the ORIGINAL frame. Per completion
    (lists of length K): predictions; rewards {reward name: score or None where it does not apply};
    total (the weighted sum, None where no reward applies); passed (see :class:`Scorer`); values (the
    task's per-completion numbers, :func:`metrics.completion_values`); tokens / truncated when the
    completions were generated here (None when they came from a predictions file).
    """

    index: int
    id: str
    task: str
    status: str = "ok"
    error: str = ""
    solution: dict[str, Any] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    predictions: list[Prediction] = field(default_factory=list)
    rewards: list[dict[str, float | None]] = field(default_factory=list)
    total: list[float | None] = field(default_factory=list)
    passed: list[bool] = field(default_factory=list)
    values: list[dict[str, float | None]] = field(default_factory=list)
    tokens: list[int] | None = None
    truncated: list[bool] | None = None

    def to_json(self) -> dict[str, Any]:
        """The predictions.jsonl line of this record."""
        out: dict[str, Any] = {"id": self.id, "task": self.task, "status": self.status}
        if self.error:
            out["error"] = self.error
        if self.status != "ok":
            return out
        out["completions"] = self.completions
        out["parsed"] = [p.to_json() for p in self.predictions]
        scores = []
        for k in range(len(self.completions)):
            row: dict[str, Any] = {
                "reward": self.total[k],
                "rewards": self.rewards[k],
                "pass": self.passed[k],
            }
            row.update(self.values[k])
            if self.tokens is not None:
                row["tokens"] = self.tokens[k]
            scores.append(row)
        out["scores"] = scores
        return out


def failed_result(index: int, record: dict[str, Any], status: str, error: str = "") -> RecordResult:
    """A record that has no completions to score (``status`` says why)."""
    return RecordResult(
        index, str(record["id"]), record["task"], status, error, dict(record.get("solution") or {})
    )


@dataclass
class ChartTally:
    """chart_render's batch metrics summed over batches and ranks: renders that worked, the sums of
    their element and visual scores, failures by reason, and the chart completions scored."""

    completions: int = 0
    rendered: float = 0.0
    element_sum: float = 0.0
    visual_sum: float = 0.0
    fails: dict[str, float] = field(default_factory=dict)

    def add(self, other: ChartTally) -> None:
        self.completions += other.completions
        self.rendered += other.rendered
        self.element_sum += other.element_sum
        self.visual_sum += other.visual_sum
        for k, v in other.fails.items():
            self.fails[k] = self.fails.get(k, 0.0) + v


class Scorer:
    """Parses and scores completions of loaded Samples with the config's rewards.

    A completion passes when its total reward is at least ``pass_threshold`` times the most the
    rewards that apply to it can give (the sum of their positive weights): with ``accuracy`` alone and
    the default 0.5 that is "correct"; with ``iou`` it is IoU >= 0.5 of the training reward (to 1e-6).
    Chart-to-code records are also scored by ``chart_render`` (the config's, or one with default
    parameters when the config has none) for the execution rate and render scores.
    """

    def __init__(self, stack: RewardStack, options: ParseOptions, pass_threshold: float = 0.5):
        if not 0.0 < pass_threshold <= 1.0:
            raise ValueError(f"eval.pass_threshold: must be in (0, 1], got {pass_threshold}")
        self.stack = stack
        self.options = options
        self.pass_threshold = pass_threshold
        self._chart_stack: RewardStack | None = None
        self._chart_name: str | None = CHART_REWARD if CHART_REWARD in stack.names else None

    @property
    def names(self) -> list[str]:
        return list(self.stack.names)

    def _chart_scores(
        self, texts: list[str], samples: list[Sample], scored
    ) -> tuple[list[float], ChartTally]:
        """chart_render scores of the chart completions of a batch, and its tally."""
        picked = [i for i, s in enumerate(samples) if eval_family(s.task) == "chart_to_code"]
        if not picked:
            return [], ChartTally()
        if self._chart_name is not None:
            row = scored.per_reward[self.stack.names.index(self._chart_name)]
            scores, metrics, prefix = (
                [float(row[i]) for i in picked],
                scored.metrics,
                f"reward/{self._chart_name}/",
            )
        else:
            if self._chart_stack is None:
                from mmrft.config import RewardSpec

                self._chart_stack = RewardStack([RewardSpec(CHART_REWARD)], None)
            sub = self._chart_stack([texts[i] for i in picked], [samples[i] for i in picked])
            scores, metrics, prefix = sub.per_reward[0].tolist(), sub.metrics, f"reward/{CHART_REWARD}/"
        rendered = metrics.get(prefix + "rendered", 0.0)
        tally = ChartTally(
            len(picked),
            rendered,
            metrics.get(prefix + "element_mean", 0.0) * rendered,
            metrics.get(prefix + "visual_mean", 0.0) * rendered,
            {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix + "fail/")},
        )
        return [0.0 if math.isnan(s) else s for s in scores], tally

    def score(
        self,
        items: list[tuple[int, Sample, list[str]]],
        tokens: list[list[int]] | None = None,
        truncated: list[list[bool]] | None = None,
    ) -> tuple[list[RecordResult], ChartTally]:
        """Results for ``(index, sample, completions)`` items (one reward call for the whole batch)."""
        texts = [c for _, _, comps in items for c in comps]
        flat = [s for _, s, comps in items for _ in comps]
        if not texts:
            return [], ChartTally()
        scored = self.stack(texts, flat)
        per = scored.per_reward  # [R, N]
        weights = torch.tensor(self.stack.weights, dtype=per.dtype)[:, None]  # [R, 1]
        best = torch.where(~per.isnan() & (weights > 0), weights, torch.zeros_like(per)).sum(0)  # [N]
        chart, tally = self._chart_scores(texts, flat, scored)
        chart_it = iter(chart)
        out, n = [], 0
        for b, (index, sample, comps) in enumerate(items):
            res = RecordResult(index, sample.id, sample.task, solution=dict(sample.solution_original))
            res.completions = list(comps)
            for c in comps:
                pred = parse_prediction(sample, c, self.options)
                total = float(scored.total[n])
                reward_row = {
                    name: (None if math.isnan(v) else v)
                    for name, v in zip(self.stack.names, per[:, n].tolist())
                }
                ok_total = not math.isnan(total)
                extra = {"chart_score": next(chart_it)} if eval_family(sample.task) == "chart_to_code" else {}
                res.predictions.append(pred)
                res.rewards.append(reward_row)
                res.total.append(total if ok_total else None)
                res.passed.append(
                    # rewards are stored in float32: a tolerance of 1e-6 for a total exactly at the threshold
                    bool(ok_total and best[n] > 0 and total >= self.pass_threshold * float(best[n]) - 1e-6)
                )
                res.values.append(completion_values(sample.task, pred, res.solution, self.options, extra))
                n += 1
            if tokens is not None:
                res.tokens = list(tokens[b])
            if truncated is not None:
                res.truncated = list(truncated[b])
            out.append(res)
        return out, tally
