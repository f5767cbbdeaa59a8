"""The non-finite guard's bookkeeping and messages (bad reward scores are caught before, in ``scoring``).

An update whose loss or gradient norm is NaN or infinite is skipped by the trainer: no optimizer step,
gradients dropped, weights and optimizer state untouched. The counts live in the trainer's checkpointed
state: ``skipped_steps`` (all skips so far, also logged as a metric) and ``bad_in_a_row``; more than
``train.max_bad_steps`` in a row stop the run with the last good state saved. The loss and the norm are
the same on every rank (global sums), so every rank decides alike.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from mmrft.errors import TrainingDiverged


def record_update(state: dict[str, Any], loss: float, grad_norm: float) -> bool:
    """Whether the update may be applied; counts it in ``state`` when it may not."""
    if math.isfinite(loss) and math.isfinite(grad_norm):
        state["bad_in_a_row"] = 0
        return True
    state["skipped_steps"] = state.get("skipped_steps", 0) + 1
    state["bad_in_a_row"] = state.get("bad_in_a_row", 0) + 1
    return False


def local_weights_finite(params: list[torch.Tensor]) -> bool:
    """Every tensor of this rank (its shards under FSDP2) finite; one device sync."""
    local = [p.to_local() if hasattr(p, "to_local") else p for p in params]
    return bool(torch.stack([torch.isfinite(p.detach()).all() for p in local]).all()) if local else True


def skipped_warning(
    state: dict[str, Any], where: str, loss: float, grad_norm: float, max_bad_steps: int
) -> str:
    return (
        f"warning: {where}: non-finite loss ({loss:g}) or grad_norm ({grad_norm:g}); update "
        f"skipped ({state['bad_in_a_row']} in a row, train.max_bad_steps={max_bad_steps})"
    )


def diverged(state: dict[str, Any], max_bad_steps: int) -> bool:
    return state.get("bad_in_a_row", 0) > max_bad_steps


def diverged_error(
    state: dict[str, Any],
    last_bad: tuple[float, float],
    max_bad_steps: int,
    stage: str,
    where: str,
    ids: list[str],
    ckpt_dir: Path,
    step: int,
) -> TrainingDiverged:
    """The error that stops the run. ``last_bad``: (loss, grad_norm) of the last skipped update; ``step``:
    the global step the last good state was saved at."""
    bad = dict(zip(("loss", "grad_norm"), last_bad))
    what = "loss" if not math.isfinite(bad["loss"]) else "grad_norm"
    shown = ", ".join(map(repr, ids[:8])) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    return TrainingDiverged(
        f"non-finite {what} ({bad[what]:g}) in {state['bad_in_a_row']} updates in a row, more than "
        f"train.max_bad_steps={max_bad_steps}: {stage} phase, {where}, batch of records {shown}; the last good "
        f"weights are saved in {ckpt_dir} (global step {step}; --resume continues from there); lower the "
        "learning rate or check that batch's records and rewards"
    )


def poisoned_weights_error(where: str, loss: float, grad_norm: float, run_dir: Path) -> TrainingDiverged:
    return TrainingDiverged(
        f"the update of {where} made weights non-finite (loss {loss:g}, grad_norm {grad_norm:g}); nothing was "
        f"saved from it: restart from the last checkpoint in {run_dir} with a lower learning rate (train.lr, "
        "sft.lr) or train.weight_decay"
    )
