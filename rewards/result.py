"""What a reward returns: one score per completion, optionally with metrics for the trainer to log.

A reward may return a plain ``list``; :class:`Scores` is a ``list`` subclass that also carries
``metrics`` (``{"parse_fail": 3.0, ...}``), which the trainer logs as ``reward/<name>/<metric>``.
Because it *is* a list, TRL and any other caller that expects ``list[float | None]`` accept it as is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


class Scores(list):
    """``list[float | None]`` with a ``metrics: dict[str, float]`` attribute (counts or means)."""

    metrics: dict[str, float]

    def __init__(self, scores: Iterable[float | None] = (), metrics: dict[str, float] | None = None):
        super().__init__(scores)
        self.metrics = dict(metrics or {})

    def __repr__(self) -> str:
        return f"Scores({list.__repr__(self)}, metrics={self.metrics!r})"


class MetricCounter:
    """Counts named events (``parse_fail``, ``clipped_box``, ...) while a reward scores a batch."""

    def __init__(self, *always: str):
        self._counts: Counter[str] = Counter({name: 0 for name in always})

    def add(self, name: str, n: int | float = 1) -> None:
        """Add ``n`` to the counter ``name``."""
        self._counts[name] += n

    def scores(
        self, values: Iterable[float | None], columns: dict[str, Any] | None = None, name: str = ""
    ) -> Scores:
        """Wrap ``values`` as :class:`Scores` carrying the counts (as floats) plus the applicable count.

        When ``columns`` holds TRL's ``log_metric`` callable (GRPOTrainer passes one to every reward),
        each metric is also sent there as ``rewards/<name>/<metric>``, so TRL logs it too.
        """
        values = list(values)
        metrics = {k: float(v) for k, v in sorted(self._counts.items())}
        metrics["applicable"] = float(sum(v is not None for v in values))
        log_metric = (columns or {}).get("log_metric")
        if callable(log_metric) and name:
            for k, v in metrics.items():
                log_metric(f"rewards/{name}/{k}", v)
        return Scores(values, metrics)
