"""Chart-to-code reward: sandboxed rendering (``rewards.sandbox``) plus element and visual scoring
(``rewards.chart.scoring``, imported on first use)."""

from rewards.chart.reward import chart_render, extract_code, get_pool, shutdown_pools

__all__ = ["chart_render", "extract_code", "get_pool", "shutdown_pools"]
