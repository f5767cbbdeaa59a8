"""Verifiable rewards for visual RFT: pure functions of completion text and dataset columns.

``rewards`` imports nothing from ``mmrft`` or ``data_pipelines``; every reward is usable as-is as a TRL
``reward_funcs`` entry.
"""

from rewards.params import Range
from rewards.registry import (
    ENTRY_POINT_GROUP,
    RewardFn,
    available,
    get,
    register_reward,
    validate_params,
    validate_reward,
)
from rewards.result import Scores

__all__ = [
    "ENTRY_POINT_GROUP",
    "Range",
    "RewardFn",
    "Scores",
    "available",
    "get",
    "register_reward",
    "validate_params",
    "validate_reward",
]
