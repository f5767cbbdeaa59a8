"""Imports every built-in reward module so that its ``@register_reward`` runs."""

from rewards import accuracy, format_reward, iou  # noqa: F401
