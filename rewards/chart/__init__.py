"""Chart-to-code reward: sandboxed rendering (``rewards.sandbox``) plus element and visual scoring."""

from rewards.chart.reward import chart_render, extract_code, get_pool, shutdown_pools
from rewards.chart.scoring import element_score, visual_score

__all__ = ["chart_render", "element_score", "extract_code", "get_pool", "shutdown_pools", "visual_score"]
