"""What a reward returns: one score per completion, optionally with metrics for the trainer to log.

A reward may return a plain ``list``; :class:`Scores` is a ``list`` subclass that also carries
``metrics`` (``{"parse_fail": 3.0, ...}``), which the trainer logs as ``reward/<name>/<metric>``.
Because it *is* a list, TRL and any other caller that expects ``list[float | None]`` accept it as is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable


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

    def scores(self, values: Iterable[float | None]) -> Scores:
        """Wrap ``values`` as :class:`Scores` carrying the counts (as floats) plus the applicable rate."""
        values = list(values)
        metrics = {k: float(v) for k, v in sorted(self._counts.items())}
        applicable = [v for v in values if v is not None]
        metrics["applicable"] = float(len(applicable))
        return Scores(values, metrics)
