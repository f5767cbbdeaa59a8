"""Step metrics, reduced over ranks in one place (``StepMetrics.reduce``); docs/metrics.md lists each one.

Every metric of a step is added with how it combines over micro-batches and ranks, so that the logged
value is the one a single process holding the whole global batch would log:

- ``add_sum``: a global sum (``loss``, whose micro-batch shares are already normalised by global counts;
  ``tokens``);
- ``add_mean``: a global weighted mean from local means and their weights (a token-mean ``clip_frac``
  weighted by the micro-batch's tokens; ``completion_len`` weighted by its sequences);
- ``add_max``: a global maximum (``adv_abs_max``, peak memory);
- ``add_global``: a value already the same on every rank (``reward``, from the all-gathered rewards).

``reduce`` runs two collectives (one sum, one max) whatever the number of metrics. A metric another
rank added and this one did not (a reward that reported nothing here) is filled with weight 0 first.
"""

from __future__ import annotations

import math

import torch

from mmrft import distributed
from mmrft.scoring import ScoredRollout

# How each metric ``grpo.policy_loss`` reports combines over micro-batches and ranks (docs/metrics.md);
# a metric not listed is a token-weighted mean.
LOSS_METRICS = {
    "clip_frac": "token_mean",
    "clip_frac_low": "token_mean",
    "clip_frac_high": "token_mean",
    "ratio_mean": "token_mean",
    "kl": "token_mean",
    "adv_abs_mean": "seq_mean",
    "adv_abs_max": "max",
    "tokens": "sum",
    "offpolicy_tokens": "sum",  # grpo.guidance: the reference answers' tokens
    "offpolicy_prob": "token_mean",  # weighted by each micro-batch's loss tokens (an approximation)
}


class StepMetrics:
    """Collects one step's local metrics; ``reduce`` turns them into global values."""

    def __init__(self) -> None:
        self._sums: dict[str, float] = {}
        self._means: dict[str, list[float]] = {}  # name -> [sum of value*weight, sum of weights]
        self._max: dict[str, float] = {}
        self._global: dict[str, float] = {}

    def add_sum(self, name: str, value: float) -> None:
        self._sums[name] = self._sums.get(name, 0.0) + float(value)

    def add_mean(self, name: str, value: float, weight: float) -> None:
        """``value``: a mean over ``weight`` items (tokens, sequences); weight 0 adds nothing."""
        acc = self._means.setdefault(name, [0.0, 0.0])
        if weight > 0:
            acc[0] += float(value) * float(weight)
            acc[1] += float(weight)

    def add_max(self, name: str, value: float) -> None:
        self._max[name] = max(self._max.get(name, -math.inf), float(value))

    def add_global(self, name: str, value: float) -> None:
        self._global[name] = float(value)

    def add_loss_metrics(self, metrics: dict[str, float], tokens: float, seqs: int) -> None:
        """The metrics of one micro-batch's ``policy_loss`` (means over its ``tokens`` / ``seqs``)."""
        for name, value in metrics.items():
            how = LOSS_METRICS.get(name, "token_mean")
            if how == "sum":
                self.add_sum(name, value)
            elif how == "max":
                self.add_max(name, value)
            else:
                self.add_mean(name, value, tokens if how == "token_mean" else seqs)

    def add_rewards(self, scored: ScoredRollout) -> None:
        """``reward/<name>``: each reward's mean over the completions it applied to; the reward's own
        ``Scores.metrics`` (``reward/<name>/<metric>``): counts, summed, or ``*_mean`` means, weighted
        by the completions."""
        n = len(scored.total)
        means = {f"reward/{name}" for name in scored.names}
        for k, name in enumerate(scored.names):
            valid = ~scored.per_reward[k].isnan()
            mean = float(scored.per_reward[k][valid].mean()) if valid.any() else 0.0
            self.add_mean(f"reward/{name}", mean, float(valid.sum()))
        for name, v in scored.metrics.items():
            if name in means:
                continue
            if name.endswith("_mean"):
                self.add_mean(name, v, n)
            else:
                self.add_sum(name, v)

    def reduce(self, info: distributed.DistInfo) -> dict[str, float]:
        """Global values (a collective when ``info.world_size`` > 1: every rank calls it)."""
        if info.world_size > 1:
            self._agree_on_names()
        sum_keys, mean_keys, max_keys = sorted(self._sums), sorted(self._means), sorted(self._max)
        flat = [self._sums[k] for k in sum_keys] + [x for k in mean_keys for x in self._means[k]]
        out: dict[str, float] = {}
        if flat:
            total = distributed.all_reduce_sum(torch.tensor(flat, dtype=torch.float64, device=info.device))
            values = total.tolist()
            out.update(zip(sum_keys, values[: len(sum_keys)]))
            pairs = values[len(sum_keys) :]
            for i, k in enumerate(mean_keys):
                weighted, weight = pairs[2 * i], pairs[2 * i + 1]
                out[k] = weighted / weight if weight > 0 else 0.0
        if max_keys:
            local = torch.tensor([self._max[k] for k in max_keys], dtype=torch.float64, device=info.device)
            out.update(zip(max_keys, distributed.all_reduce_max(local).tolist()))
        out.update(self._global)
        return out

    def _agree_on_names(self) -> None:
        names = distributed.gather_objects((sorted(self._sums), sorted(self._means), sorted(self._max)))
        for sums, means, maxes in names:
            for k in sums:
                self._sums.setdefault(k, 0.0)
            for k in means:
                self._means.setdefault(k, [0.0, 0.0])
            for k in maxes:
                self._max.setdefault(k, -math.inf)


def per_pass(passes: list[dict[str, float]]) -> dict[str, float]:
    """The metrics of the mu update passes: the last under its plain names; with mu > 1 every pass k
    (1-based) also as ``pass<k>/<name>``."""
    out = dict(passes[-1])
    if len(passes) > 1:
        for k, metrics in enumerate(passes, start=1):
            out.update({f"pass{k}/{name}": v for name, v in metrics.items()})
    return out
