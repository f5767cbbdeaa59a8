"""Imports every built-in reward module so that its ``@register_reward`` runs."""

import rewards.chart.reward  # noqa: F401  (chart_render)
from rewards import accuracy, counting, detection, format_reward, iou, temporal, tracking  # noqa: F401
